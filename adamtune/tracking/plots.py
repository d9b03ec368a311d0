"""Study summary figures for the parent MLflow run, drawn from the Optuna study alone (so they
cover trials of every worker and every earlier invocation). Matplotlib's object API, no pyplot:
safe to call from a background thread."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config.adam import AdamConfig
from adamtune.config.phases import from_segments, learning_rates
from adamtune.results.importance import MIN_TRIALS_FOR_IMPORTANCES
from adamtune.results.studies import best_first, trial_config

TOP = 5
__all__ = ["MIN_TRIALS_FOR_IMPORTANCES", "study_figures"]


def study_figures(
    study: optuna.Study,
    metric_name: str,
    grad_norms: dict[int, list[float]] | None = None,
    exported: int | None = None,
) -> dict[str, Any]:
    """Artifact path -> matplotlib Figure, for the figures the study has data for.
    ``grad_norms`` (trial number -> per-step global gradient norm) are the trials this process
    logged; the top trials among them get a plot of their norms. ``exported``: the trial
    `adamtune export` writes (the confirmed winner), marked on the LR plot."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return {}
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    top = best_first(done, maximize)[:TOP]
    figures = {
        "plots/optimization_history.png": _history(done, metric_name, maximize),
        "plots/lr_schedules_top.png": _schedules(top, exported, done),
        "plots/validation_curves_top.png": _curves(top, metric_name),
    }
    norms = {t.number: grad_norms[t.number] for t in top if grad_norms and grad_norms.get(t.number)}
    if norms:
        figures["plots/grad_norms_top.png"] = _grad_norms(top, norms)
    members = [t for t in done if t.user_attrs.get("trajectory")]
    if members:
        figures["plots/population_lr.png"] = _population(members, maximize)
    importances = _importances(study, len(done))
    if importances:
        figures["plots/param_importances.png"] = importances
    return figures


def warm_up_figure() -> Any:
    """A throwaway figure with every element the summary draws (log axis, legend, bars)."""
    fig, ax = _figure("warm-up", "step", "lr")
    ax.plot([0, 1, 2], [1e-4, 1e-3, 1e-2], marker=".", label="trial 0 (0.5)")
    ax.scatter([0, 1], [1, 2], s=14, label="completed trial")
    ax.barh(["lr", "schedule.warmup_fraction"], [0.4, 0.6])
    _log_y(ax)
    ax.legend(fontsize=8)
    return fig


def _figure(title: str, xlabel: str, ylabel: str, left: float = 0.12) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # Fixed margins: matplotlib's constrained layout doubles the cost of drawing a figure, and
    # these are drawn while the user waits for the search to return.
    fig = Figure(figsize=(6, 3.5), dpi=90)
    fig.subplots_adjust(left=left, right=0.97, top=0.9, bottom=0.13)
    ax = fig.subplots()
    # A title at a fixed y: matplotlib otherwise measures every tick label to place it.
    ax.set_title(title, y=1.0, pad=6)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _lr_axis(ax: Any, values: list[float]) -> None:
    """A log axis where the values span a decade or more; inside one (a constant LR, a short
    decay), a linear one, since a log axis there may hold no labelled tick at all."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) >= 10 * min(positive):
        _log_y(ax)
        return
    from matplotlib import ticker

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.3g}"))


def _log_y(ax: Any) -> None:
    """A log y axis labelled at 1, 2 and 5 times each power of ten, in plain text ("2e-03"),
    without minor ticks: those and mathtext labels cost more to draw than the rest of the
    figures together, and a range inside one decade stays labelled."""
    from matplotlib import ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.0e}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())


def _history(done: list[FrozenTrial], metric_name: str, maximize: bool) -> Any:
    fig, ax = _figure("Optimization history", "trial", metric_name)
    numbers = [t.number for t in done]
    values = [float(t.value or 0.0) for t in done]
    best: list[float] = []
    running: float | None = None
    for v in values:
        running = v if running is None else (max(running, v) if maximize else min(running, v))
        best.append(running)
    ax.scatter(numbers, values, s=14, label="completed trial")
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.legend()
    return fig


def _schedules(
    top: list[FrozenTrial], exported: int | None = None, done: list[FrozenTrial] | None = None
) -> Any:
    fig, ax = _figure("Learning-rate schedules of the top trials", "optimizer step", "lr")
    drawn: list[float] = []
    chosen = [t for t in done or [] if t.number == exported and t not in top]
    for trial in [*top, *chosen]:
        config, steps = trial_config(trial), trial.user_attrs.get("total_steps")
        if config and steps:
            adam = AdamConfig.from_dict(config)
            lrs = learning_rates(adam, steps)  # a population's winner: its schedule
            mark = trial.number == exported
            ax.plot(
                range(steps),
                lrs,
                label=f"trial {trial.number} ({trial.value:.4g}){', exported' if mark else ''}",
                linewidth=2.5 if mark else 1.2,
                color="black" if mark else None,
            )
            drawn += lrs
    _lr_axis(ax, drawn)
    ax.legend(fontsize=8)
    return fig


def _population(members: list[FrozenTrial], maximize: bool) -> Any:
    """Every member's own LR at every step, coloured by its final metric (--strategy pbt)."""
    from matplotlib import colormaps

    fig, ax = _figure("The population's learning rates", "optimizer step", "lr")
    values = [float(t.value or 0.0) for t in members]
    low, high = min(values), max(values)
    cmap = colormaps["viridis" if maximize else "viridis_r"]
    drawn: list[float] = []
    for trial, value in sorted(zip(members, values, strict=True), key=lambda p: p[1]):
        steps = trial.user_attrs.get("total_steps")
        if not isinstance(steps, int) or steps <= 0:
            continue
        lrs = population_lrs(trial.user_attrs["trajectory"], steps)
        shade = (value - low) / (high - low) if high > low else 1.0
        ax.plot(range(steps), lrs, color=cmap(shade), linewidth=1)
        drawn += lrs
    _lr_axis(ax, drawn)
    best = max(values) if maximize else min(values)
    ax.text(0.99, 0.98, f"bright: best ({best:.4g})", transform=ax.transAxes, ha="right", va="top")
    return fig


def population_lrs(trajectory: list[dict[str, Any]], steps: int) -> list[float]:
    """A member's own LR at every step, from its ``trajectory`` user attribute."""
    segments = [(item["step"], AdamConfig.from_dict(item["config"])) for item in trajectory]
    return learning_rates(from_segments(segments, steps), steps)


def _grad_norms(top: list[FrozenTrial], norms: dict[int, list[float]]) -> Any:
    """The top trials' global gradient norm at every step: spikes are oscillation, a steady
    climb a learning rate too high (the norm before clipping, where a trial clips)."""
    fig, ax = _figure("Gradient norms of the top trials", "optimizer step", "gradient norm")
    drawn: list[float] = []
    for trial in top:
        if trial.number in norms:
            ax.plot(norms[trial.number], linewidth=0.8, label=f"trial {trial.number}")
            drawn += norms[trial.number]
    _lr_axis(ax, drawn)
    ax.legend(fontsize=8)
    return fig


def _curves(top: list[FrozenTrial], metric_name: str) -> Any:
    fig, ax = _figure("Validation curves of the top trials", "epoch", metric_name)
    for trial in top:
        epochs = sorted(trial.intermediate_values)
        ax.plot(
            epochs,
            [trial.intermediate_values[e] for e in epochs],
            marker=".",
            label=f"trial {trial.number}",
        )
    ax.legend(fontsize=8)
    return fig


def _importances(study: optuna.Study, n_done: int) -> Any | None:
    """Optuna's PED-ANOVA importances (adamtune.results.importance) as a bar chart."""
    from adamtune.results.importance import importances as parameter_importances

    importances, _ = parameter_importances(study)
    if not importances:
        return None
    fig, ax = _figure("Parameter importances (PED-ANOVA)", "importance", "", left=0.33)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    return fig
