"""How much better than the baseline, and is that real: read from a study's user attributes.

The search writes two study user attributes (plain JSON, readable by any Optuna tool):

- ``baseline``: ``label``, ``config``, ``how`` (``trial``: enqueued as trial ``trial``;
  ``separate``: evaluated outside the sampler), ``value``, ``state``, ``reason``;
- ``confirmation``: the top trials and the baseline retrained under further ``seeds``, each
  candidate with its per-seed ``values`` (None where a run failed), ``mean``, ``sd`` and, where
  the task has a test split, the same for ``test_metric``; ``winner`` is the trial with the best
  mean.

This module turns them into the gain every summary reports (the end of a search, ``show``,
``studies``, the MLflow parent run). No torch, no trainer: the light path reads it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FRACTION_SUFFIXES = ("accuracy", "acc", "f1", "auc", "precision", "recall")


@dataclass(frozen=True)
class Baseline:
    label: str
    config: dict[str, Any]
    how: str  # "trial" or "separate"
    trial: int | None
    value: float | None
    reason: str  # why there is no value


@dataclass(frozen=True)
class Candidate:
    """One configuration retrained under the confirmation seeds."""

    label: str  # "trial 12" or the baseline's label
    trial: int | None
    search_value: float | None  # its value in the search (a single run)
    values: list[float | None]
    test_values: list[float | None]
    role: str = ""  # a population's: "schedule" (its winner, replayed) or "fixed"

    @property
    def done(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def failed(self) -> int:
        return len(self.values) - len(self.done)

    @property
    def mean(self) -> float | None:
        return mean_sd(self.values)[0]

    @property
    def sd(self) -> float | None:
        return mean_sd(self.values)[1]


@dataclass(frozen=True)
class Confirmation:
    metric: str
    test_metric: str | None
    seeds: list[int]
    candidates: list[Candidate]  # the top trials, best mean first
    baseline: Candidate | None
    winner: int | None


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that exist (sd 0 for one)."""
    done = [v for v in values if v is not None and math.isfinite(v)]
    if not done:
        return None, None
    return statistics.fmean(done), statistics.stdev(done) if len(done) > 1 else 0.0


def improvement(value: float, baseline: float, maximize: bool) -> float:
    """How much better ``value`` is than ``baseline`` in the study's direction (> 0: better)."""
    return value - baseline if maximize else baseline - value


def is_fraction(metric: str) -> bool:
    """Accuracy-like metrics, in [0, 1]: gains read in percentage points."""
    return metric.lower().endswith(FRACTION_SUFFIXES)


def gain_text(gain: float, baseline: float, metric: str, maximize: bool) -> str:
    """``+8.2 points`` for accuracy-like metrics, ``12.3% lower`` for the rest."""
    if is_fraction(metric):
        return f"{gain * 100:+.1f} points"
    if baseline == 0:
        return f"{gain:+.4g}"
    up = (gain >= 0) == maximize
    return f"{abs(gain / baseline) * 100:.1f}% {'higher' if up else 'lower'}"


def study_baseline(user_attrs: Mapping[str, Any]) -> Baseline | None:
    """The study's baseline, or None (no baseline, or an attribute adamtune did not write)."""
    attr = user_attrs.get("baseline")
    if not isinstance(attr, dict) or not isinstance(attr.get("label"), str):
        return None
    value = attr.get("value")
    trial = attr.get("trial")
    return Baseline(
        label=attr["label"],
        config=attr["config"] if isinstance(attr.get("config"), dict) else {},
        how=str(attr.get("how", "separate")),
        trial=trial if _is_int(trial) else None,
        value=_number(value),
        reason=str(attr.get("reason") or ""),
    )


def study_confirmation(user_attrs: Mapping[str, Any]) -> Confirmation | None:
    attr = user_attrs.get("confirmation")
    if not isinstance(attr, dict) or not isinstance(attr.get("candidates"), list):
        return None
    candidates = [c for c in map(_candidate, attr["candidates"]) if c is not None]
    winner = attr.get("winner")
    test_metric = attr.get("test_metric")
    return Confirmation(
        metric=str(attr.get("metric", "value")),
        test_metric=test_metric if isinstance(test_metric, str) else None,
        seeds=[s for s in attr.get("seeds", []) if _is_int(s)],
        candidates=candidates,
        baseline=_candidate(attr.get("baseline")),
        winner=winner if _is_int(winner) else None,
    )


def _candidate(data: Any) -> Candidate | None:
    if not isinstance(data, dict) or not isinstance(data.get("values"), list):
        return None
    trial = data.get("trial")
    search = data.get("search_value")
    return Candidate(
        label=str(data.get("label", "")),
        trial=trial if _is_int(trial) else None,
        search_value=_number(search),
        values=[_number(v) for v in data["values"]],
        test_values=[_number(v) for v in data.get("test_values", [])],
        role=str(data.get("role", "")),
    )


def schedule_line(confirmation: Confirmation, maximize: bool) -> str | None:
    """A population's confirmation: its winner's schedule replayed from scratch against the
    best fixed configuration it held (a member never exploited) and against the baseline,
    under the same seeds; the test split's figures beside the fixed configuration's."""
    roles = {c.role: c for c in confirmation.candidates}
    schedule, fixed = roles.get("schedule"), roles.get("fixed")
    if schedule is None or schedule.mean is None:
        return None
    metric = confirmation.metric
    line = f"the schedule of {schedule.label}, replayed from scratch: {_pm(schedule.values)}"
    others = [("the best fixed configuration", fixed), ("", confirmation.baseline)]
    compared = []
    for what, other in others:
        if other is None or other.mean is None:
            continue
        named = f"{what} ({other.label})" if what else other.label
        gain = gain_text(
            improvement(schedule.mean, other.mean, maximize), other.mean, metric, maximize
        )
        compared.append(f"{named} {_pm(other.values)}: {gain}")
    if compared:
        line += " vs " + ", vs ".join(compared)
    test_s = mean_sd(schedule.test_values)[0]
    test_f = mean_sd(fixed.test_values)[0] if fixed is not None else None
    if confirmation.test_metric and test_s is not None and test_f is not None:
        assert fixed is not None
        test = confirmation.test_metric
        gain = gain_text(improvement(test_s, test_f, maximize), test_f, test, maximize)
        line += f"; {test} {_pm(schedule.test_values)} vs {_pm(fixed.test_values)}: {gain}"
    return line


def best_line(
    metric: str,
    best_value: float,
    best_trial: int,
    baseline: Baseline | None,
    maximize: bool,
) -> str | None:
    """``best val_accuracy 0.684 (trial 37) vs AdamW defaults 0.602: +8.2 points``."""
    if baseline is None:
        return None
    head = f"best {metric} {best_value:.4g} (trial {best_trial})"
    if baseline.value is None:
        why = f" ({baseline.reason})" if baseline.reason else ""
        return f"{head}; {baseline.label}: no value{why}"
    gain = improvement(best_value, baseline.value, maximize)
    text = gain_text(gain, baseline.value, metric, maximize)
    return f"{head} vs {baseline.label} {baseline.value:.4g}: {text}"


def confirmed_line(confirmation: Confirmation, maximize: bool) -> str | None:
    """``confirmed over 3 seeds: trial 12 0.651 ± 0.010 vs AdamW defaults 0.531 ± 0.012: +12.0
    points``, and the same on the test split where there is one."""
    winner = next((c for c in confirmation.candidates if c.trial == confirmation.winner), None)
    if winner is None or winner.mean is None:
        return None
    k = len(confirmation.seeds)
    line = f"confirmed over {k} seed{'s' if k != 1 else ''}: {winner.label} {_pm(winner.values)}"
    base = confirmation.baseline
    if base is not None and base.mean is not None:
        gain = improvement(winner.mean, base.mean, maximize)
        line += f" vs {base.label} {_pm(base.values)}: "
        line += gain_text(gain, base.mean, confirmation.metric, maximize)
        test_w, test_b = mean_sd(winner.test_values)[0], mean_sd(base.test_values)[0]
        if confirmation.test_metric and test_w is not None and test_b is not None:
            test_gain = improvement(test_w, test_b, maximize)
            line += (
                f"; {confirmation.test_metric} {_pm(winner.test_values)} vs "
                f"{_pm(base.test_values)}: "
                f"{gain_text(test_gain, test_b, confirmation.test_metric, maximize)}"
            )
    return line


# Student's t at 97.5% (a two-sided 5% test) for 1..30 degrees of freedom; 2.0 beyond.
_T975 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14,
         2.13, 2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05,
         2.05, 2.04)  # fmt: skip


def noise_line(confirmation: Confirmation, maximize: bool) -> str | None:
    """One plain sentence where the confirmed gain over the baseline is inside the noise: a
    paired t-test over the seeds both trained with (the same seeds: the same initial weights
    and batch order for both) that does not reject "no difference" at 5%, or a single seed.
    None where the gain is clear, or where there is nothing to compare."""
    winner = next((c for c in confirmation.candidates if c.trial == confirmation.winner), None)
    base = confirmation.baseline
    if winner is None or base is None:
        return None
    pairs = [
        (w, b)
        for w, b in zip(winner.values, base.values, strict=False)
        if w is not None and b is not None
    ]
    if not pairs:
        return None
    n = len(pairs)
    differences = [w - b for w, b in pairs]
    mean = sum(differences) / n
    if n == 1:
        return f"One seed cannot tell {winner.label} from {base.label}: --confirm 5 would tell."
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 2.0
    if abs(mean) > t * sd / math.sqrt(n):
        return None
    more = math.ceil((2.1 * sd / abs(mean)) ** 2) + 1 if mean else 2 * n
    seeds = max(2 * n, min(more, 100))
    return (
        f"Not distinguishable from {base.label} over {n} seeds (paired difference "
        f"{mean:+.3g} ± {sd / math.sqrt(n):.2g}, a 5% test); --confirm {seeds} would tell."
    )


def confirmation_rows(confirmation: Confirmation) -> tuple[list[str], list[list[Any]]]:
    """A table of every candidate: its search value beside its confirmed mean ± sd."""
    k = len(confirmation.seeds)
    headers = ["candidate", "search value", f"mean ± sd over {k} seeds"]
    if confirmation.test_metric:
        headers.append(f"{confirmation.test_metric} mean ± sd")
    rows = []
    everyone = list(confirmation.candidates)
    if confirmation.baseline is not None:
        everyone.append(confirmation.baseline)
    for c in everyone:
        label = c.label + (f" ({c.role})" if c.role else "")
        label += " (winner)" if c.trial == confirmation.winner and c.trial is not None else ""
        if c.failed:
            label += f" ({c.failed} of {len(c.values)} runs failed)"
        row: list[Any] = [label, c.search_value, _pm(c.values)]
        if confirmation.test_metric:
            row.append(_pm(c.test_values))
        rows.append(row)
    return headers, rows


def summary_metrics(
    user_attrs: Mapping[str, Any], best_value: float | None, maximize: bool
) -> dict[str, float]:
    """The numbers an MLflow parent run shows: baseline, best, gain, confirmed means."""
    out: dict[str, float] = {}
    baseline = study_baseline(user_attrs)
    if baseline is not None and baseline.value is not None:
        out["baseline_value"] = baseline.value
        if best_value is not None:
            out["gain"] = improvement(best_value, baseline.value, maximize)
    confirmation = study_confirmation(user_attrs)
    if confirmation is None:
        return out
    winner = next((c for c in confirmation.candidates if c.trial == confirmation.winner), None)
    if winner is not None and winner.mean is not None:
        out["confirmed_mean"] = winner.mean
        out["confirmed_sd"] = winner.sd or 0.0
        base = confirmation.baseline
        if base is not None and base.mean is not None:
            out["baseline_confirmed_mean"] = base.mean
            out["confirmed_gain"] = improvement(winner.mean, base.mean, maximize)
        test = mean_sd(winner.test_values)[0]
        if test is not None:
            out["confirmed_test_mean"] = test
    return out


def _pm(values: Sequence[float | None]) -> str:
    mean, sd = mean_sd(values)
    if mean is None or sd is None:
        return "no value"
    return f"{mean:.4g} ± {sd:.2g}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """A finite number as a float; None for anything else (a hand-edited attribute)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None
