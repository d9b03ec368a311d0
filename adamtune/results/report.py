"""Plain-text tables and summaries of studies, for the terminal (no click, no colour)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from adamtune.config.adam import OPTIONAL_FIELDS, SCHEDULE_FIELDS
from adamtune.results.gain import (
    best_line,
    confirmation_rows,
    confirmed_line,
    gain_text,
    improvement,
    noise_line,
    schedule_line,
    study_baseline,
    study_confirmation,
    summary_metrics,
)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table with a rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def trial_value_text(trial: FrozenTrial) -> str:
    """``COMPLETE 0.9722``, ``PRUNED (diverged: ...)``, ``FAIL (ValueError: ...)``."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return f"COMPLETE {trial.value:.4g}"
    reason = (
        trial.user_attrs.get("pruned_reason")
        or trial.user_attrs.get("fail_reason")
        or trial.system_attrs.get("fail_reason", "")
    )
    reason = reason.strip().splitlines()[-1] if isinstance(reason, str) and reason.strip() else ""
    return f"{trial.state.name} ({reason})" if reason else trial.state.name


def config_rows(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """Flatten an AdamConfig dict for display, skipping schedule fields its kind ignores."""
    schedule = config.get("schedule")
    schedule = dict(schedule) if isinstance(schedule, dict) else {}
    used = SCHEDULE_FIELDS.get(str(schedule.get("kind")), ())
    for name in ("final_lr_fraction", "gamma", "decays"):
        if name not in used:
            schedule.pop(name, None)
    rows = [
        (k, v)
        for k, v in config.items()
        if k not in ("schedule", "phases") and not (k in OPTIONAL_FIELDS and v is None)
    ]
    return rows + [(f"schedule.{k}", v) for k, v in schedule.items()]


def best_trial_summary(study_name: str, trial: FrozenTrial, metric_name: str) -> str:
    """The closing table of a search: the best trial and its full configuration."""
    header = (
        f"Best trial of study {study_name!r}: trial {trial.number}, "
        f"{metric_name} = {trial.value:.6g}"
    )
    config = trial.user_attrs.get("config")
    if not isinstance(config, dict) or not config:
        return header + "\n" + format_table(["parameter", "value"], sorted(trial.params.items()))
    values = trial.user_attrs.get("values")
    own = [(f"values.{k}", v) for k, v in values.items()] if isinstance(values, dict) else []
    steps = trial.user_attrs.get("total_steps")
    if config.get("phases") and isinstance(steps, int) and steps > 0:
        return header + "\n" + schedule_table(config, steps)
    return header + "\n" + format_table(["parameter", "value"], config_rows(config) + own)


def schedule_table(config: dict[str, Any], total_steps: int) -> str:
    """A schedule of phases (a population's member) as segments: the steps and share of
    training each covers, its LR at its first and last step, and its other values."""
    from adamtune.config.adam import AdamConfig
    from adamtune.config.phases import learning_rates, phase_starts

    adam = AdamConfig.from_dict(config)
    rates = learning_rates(adam, total_steps)
    starts = phase_starts(adam, total_steps)
    ends = [step for step, _ in starts[1:]] + [total_steps]
    clips = any(values.max_grad_norm is not None for _, values in starts)
    headers = ["steps", "training", "lr (first -> last)", "beta1", "beta2", "eps", "weight_decay"]
    headers += ["max_grad_norm"] * clips + ["lr rule"]
    rows = []
    for (start, values), end in zip(starts, ends, strict=True):
        share = f"{100 * start / total_steps:.0f}-{100 * end / total_steps:.0f}%"
        rule = values.schedule.kind
        if values.schedule.warmup_fraction:
            rule += f"+warmup {values.schedule.warmup_fraction:.3g}"
        row: list[Any] = [
            f"{start}-{end - 1}",
            share,
            f"{rates[start]:.3g} -> {rates[end - 1]:.3g}",
        ]
        row += [values.beta1, values.beta2, values.eps, values.weight_decay]
        row += [values.max_grad_norm] * clips + [rule]
        rows.append(row)
    title = (
        f"The schedule its weights trained with, {len(starts)} segment"
        f"{'s' if len(starts) != 1 else ''} over {total_steps} steps (export replays it by "
        "fraction of training):"
    )
    return title + "\n" + format_table(headers, rows)


def top_trials_table(trials: Sequence[FrozenTrial]) -> str:
    headers = ["trial", "state", "value", "lr", "beta1", "beta2", "eps", "weight_decay", "schedule"]
    rows = []
    for t in trials:
        c = t.user_attrs.get("config")
        c = c if isinstance(c, dict) else {}
        schedule = c.get("schedule")
        schedule = schedule if isinstance(schedule, dict) else {}
        kind = schedule.get("kind", "")
        if isinstance(schedule.get("warmup_fraction"), float) and schedule["warmup_fraction"]:
            kind = f"{kind}+warmup {schedule['warmup_fraction']:.3g}"
        phases = c.get("phases")
        if isinstance(phases, list) and phases:  # a population's member: its first segment
            kind = f"{kind}, then {len(phases)} more segment{'s' if len(phases) != 1 else ''}"
        rows.append(
            [
                t.number,
                t.state.name,
                t.value,
                c.get("lr"),
                c.get("beta1"),
                c.get("beta2"),
                c.get("eps"),
                c.get("weight_decay"),
                kind,
            ]
        )
    return format_table(headers, rows)


def gain_report(user_attrs: Any, best: FrozenTrial, metric: str, maximize: bool) -> str:
    """The gain over the baseline, and the confirmation table where the study has one; "" for
    a study with neither (one made with --no-baseline and --confirm 0)."""
    lines = []
    line = best_line(
        metric, float(best.value or 0.0), best.number, study_baseline(user_attrs), maximize
    )
    if line:
        lines.append(line[0].upper() + line[1:])
    confirmation = study_confirmation(user_attrs)
    if confirmation is not None:
        confirmed = confirmed_line(confirmation, maximize)
        if confirmed:
            lines.append(confirmed[0].upper() + confirmed[1:])
            noise = noise_line(confirmation, maximize)
            if noise:
                lines.append(noise)
        population = schedule_line(confirmation, maximize)
        if population:
            lines.append(population[0].upper() + population[1:])
        headers, rows = confirmation_rows(confirmation)
        lines += ["", format_table(headers, rows)]
        if confirmation.winner is not None:
            lines.append(
                f"`adamtune export` exports trial {confirmation.winner}, the confirmed winner."
            )
    return "\n".join(lines)


def gain_cell(user_attrs: Any, best_value: float | None, metric: str, maximize: bool) -> str:
    """The ``studies`` table's gain column: ``+8.2 points``, confirmed where it was."""
    confirmation = study_confirmation(user_attrs)
    if confirmation is not None:
        metrics = summary_metrics(user_attrs, best_value, maximize)
        if "confirmed_gain" in metrics:
            base = metrics["baseline_confirmed_mean"]
            return gain_text(metrics["confirmed_gain"], base, metric, maximize) + " (confirmed)"
    baseline = study_baseline(user_attrs)
    if baseline is None or baseline.value is None or best_value is None:
        return ""
    gain = improvement(best_value, baseline.value, maximize)
    return gain_text(gain, baseline.value, metric, maximize)
