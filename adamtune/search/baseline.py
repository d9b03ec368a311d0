"""A new study's baseline, run around the trials: enqueued as the study's first trial where it
lies inside the space, else evaluated apart and recorded on the study (the baseline itself,
and why, is adamtune.space.baseline's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import optuna

from adamtune.config.adam import AdamConfig
from adamtune.config.settings import SearchSettings
from adamtune.search.confirm import run_record
from adamtune.space.baseline import STUDY_ATTR, TRIAL_ATTR, baseline_config, baseline_params
from adamtune.space.search_space import SearchSpace
from adamtune.tracking import Tracker
from adamtune.training.runner import Evaluated, Runner


class Outcome(Protocol):
    """What training one configuration gave (adamtune.training.runner.Evaluated fits)."""

    @property
    def value(self) -> float | None: ...
    @property
    def metrics(self) -> dict[str, float]: ...
    @property
    def reason(self) -> str: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


def prepare_baseline(
    study: optuna.Study,
    space: SearchSpace,
    *,
    grid: bool,
    created: bool = True,
    evaluate: Callable[[AdamConfig], OutcomeT],
    log: Callable[[str, AdamConfig, OutcomeT], None],
    say: Callable[[str], None],
) -> None:
    """A new study's baseline: enqueued as its first trial where it lies inside ``space`` (and
    the sampler is not a grid, whose points it would not count), else evaluated now with
    ``evaluate`` and recorded on the study. ``log(name, config, outcome)`` hands a separate evaluation to
    the tracker. Only the process that ``created`` the study adds a baseline (of several
    processes starting together on a new study exactly one did; the others' trials may already
    be in it). A study with a baseline already is left as it is; so is a space with nothing to
    search (its one configuration is the baseline)."""
    if not created or STUDY_ATTR in study.user_attrs or not space.searched:
        return
    config, label = baseline_config(space)
    record: dict[str, Any] = {"label": label, "config": config.to_dict()}
    params = None if grid else baseline_params(space, config)
    if params is not None:
        study.enqueue_trial(params, user_attrs={TRIAL_ATTR: label})
        # Another process may have claimed it already: look among every state.
        number = next(
            t.number for t in study.get_trials(deepcopy=False) if TRIAL_ATTR in t.user_attrs
        )
        study.set_user_attr(
            STUDY_ATTR, {**record, "how": "trial", "trial": number, "state": "WAITING"}
        )
        say(f"Baseline: {label}, trial {number}.")
        return
    where = "outside the grid" if grid else "outside the space"
    say(f"Baseline: {label}, {where}; evaluating it apart from the search.")
    outcome = evaluate(config)
    log("baseline", config, outcome)
    study.set_user_attr(
        STUDY_ATTR,
        {
            **record,
            "how": "separate",
            "value": outcome.value,
            "metrics": outcome.metrics,
            "state": "COMPLETE" if outcome.value is not None else "FAIL",
            "reason": outcome.reason,
        },
    )


def record_baseline_trial(
    study: optuna.Study, number: int, state: str, value: float | None, reason: str
) -> None:
    """The enqueued baseline trial ``number`` finished: its value goes on the study attribute,
    so readers that see no trials (``adamtune studies``) still know it."""
    attr = study.user_attrs.get(STUDY_ATTR)
    if isinstance(attr, dict) and attr.get("trial") == number:
        study.set_user_attr(STUDY_ATTR, {**attr, "state": state, "value": value, "reason": reason})


def start_baseline(
    study: optuna.Study,
    space: SearchSpace,
    settings: SearchSettings,
    runner: Runner,
    tracker: Tracker,
    say: Callable[[str], None],
    created: bool = True,
) -> None:
    """A new study's baseline (adamtune.baseline): enqueued, or evaluated here and tracked,
    by the process that ``created`` the study."""

    def evaluate(config: AdamConfig) -> Evaluated:
        return runner.evaluate([config], [settings.seed])[0][0]

    def log(name: str, config: AdamConfig, outcome: Evaluated) -> None:
        metric = runner.task.metric_name
        tracker.log_run(name, run_record(outcome, None, config, metric, "baseline"))

    prepare_baseline(
        study,
        space,
        grid=settings.sampler == "grid",
        created=created,
        evaluate=evaluate,
        log=log,
        say=say,
    )
