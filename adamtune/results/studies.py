"""Reading studies: list them, load one, rank its trials, pick the one to export.

This is the light path (``adamtune studies``, ``show``, ``export``): it imports Optuna but
neither torch nor the trainer, and opens storages read-only, so it never creates a file, never
adds tables and works on a read-only copy of a study.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune._util.urls import journal_path, redact, sqlite_path
from adamtune.config.adam import AdamConfig
from adamtune.errors import StorageError, StudyError, describe, shown
from adamtune.results.export import ExportedTrial
from adamtune.results.gain import noise_line, study_confirmation
from adamtune.storage.claims import is_claim
from adamtune.storage.store import open_storage


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _missing(storage_url: str) -> bool:
    """A local storage file that does not exist holds no study (and reading must not make it)."""
    path = sqlite_path(storage_url) or journal_path(storage_url)
    return path is not None and not path.exists()


def list_studies(storage_url: str) -> list[optuna.study.StudySummary]:
    _quiet()
    if _missing(storage_url):
        return []
    storage = open_storage(storage_url, read_only=True)
    summaries = _reading(storage_url, lambda: optuna.get_all_study_summaries(storage, True))
    names = {s.study_name for s in summaries}
    return [s for s in summaries if not is_claim(s.study_name, names)]  # claim markers


def load_study(name: str, storage_url: str) -> optuna.Study:
    """Load an existing study read-only; an unknown name lists the ones that exist."""
    _quiet()
    if _missing(storage_url):
        raise StudyError(f"no study {shown(name)} in {redact(storage_url)} (studies there: none)")
    storage = open_storage(storage_url, read_only=True)

    def load() -> optuna.Study:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            every = set(optuna.get_all_study_names(storage))
            names = sorted(n for n in every if not is_claim(n, every))
            known = ", ".join(names) if names else "none"
            raise StudyError(
                f"no study {shown(name)} in {redact(storage_url)} (studies there: {known})"
            ) from None
        try:  # read now, so a damaged attribute is found here rather than half-way through
            study.user_attrs  # noqa: B018
            study.get_trials(deepcopy=False)
        except ValueError as exc:  # Optuna's json.loads of a stored attribute
            raise StorageError(
                f"--storage {redact(storage_url)!r}: study {shown(name)} holds an attribute "
                f"that is not JSON ({describe(exc)}); the storage was changed by hand or damaged"
            ) from None
        return study

    return _reading(storage_url, load)


def _reading(storage_url: str, read: Any) -> Any:
    """Run ``read()``; a storage that breaks while being read is one StorageError line."""
    try:
        return read()
    except (StudyError, StorageError):
        raise
    except Exception as exc:
        raise StorageError(
            f"--storage {redact(storage_url)!r}: cannot read: {describe(exc)}"
        ) from None


def maximizes(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def best_first(trials: list[FrozenTrial], maximize: bool) -> list[FrozenTrial]:
    """Completed trials with a value, best first (ties keep trial order)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(done, key=lambda t: float(t.value or 0.0), reverse=maximize)


def top_trials(study: optuna.Study, k: int = 10) -> list[FrozenTrial]:
    """The ``k`` best completed trials, best first."""
    return best_first(study.get_trials(deepcopy=False), maximizes(study))[:k]


def trial_config(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's ``config`` user attribute, or {} when it is missing or not a mapping."""
    config = trial.user_attrs.get("config")
    return config if isinstance(config, dict) else {}


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The confirmed winner (see adamtune.confirm) where the study has one, else the best
    completed trial; or trial ``number`` when it is completed."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        winner = confirmed_winner(study, trials)
        if winner is not None:
            return winner
        ranked = best_first(trials, maximizes(study))
        if not ranked:
            raise StudyError(f"study {shown(study.study_name)} has no completed trial yet")
        return ranked[0]
    matches = [t for t in trials if t.number == number]
    if not matches:
        have = f"trials 0..{len(trials) - 1}" if trials else "no trials"
        raise StudyError(f"--trial {number}: study {shown(study.study_name)} has {have}")
    if matches[0].state != TrialState.COMPLETE:
        raise StudyError(
            f"--trial {number}: the trial is {matches[0].state.name}, not "
            "COMPLETE; only completed trials can be exported"
        )
    return matches[0]


def confirmed_winner(study: optuna.Study, trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The completed trial that confirmation ranked first, if any."""
    confirmation = study_confirmation(study.user_attrs)
    if confirmation is None or confirmation.winner is None:
        return None
    won = next((c for c in confirmation.candidates if c.trial == confirmation.winner), None)
    if won is None or won.mean is None:  # a winner without one finished run is none
        return None
    for trial in trials:
        if trial.number == confirmation.winner and trial.state == TrialState.COMPLETE:
            return trial
    return None


def chosen_because(study: optuna.Study, trial: FrozenTrial) -> str:
    """Why ``trial`` is the one exported: ``the confirmed winner: ...`` or ``the best trial``."""
    confirmation = study_confirmation(study.user_attrs)
    winner = None
    if confirmation is not None and confirmation.winner == trial.number:
        winner = next((c for c in confirmation.candidates if c.trial == trial.number), None)
    if confirmation is not None and winner is not None and winner.mean is not None:
        k = len(confirmation.seeds)
        noise = noise_line(confirmation, maximizes(study))
        return (
            f"the confirmed winner: mean {confirmation.metric} {winner.mean:.6g} "
            f"(sd {winner.sd or 0.0:.2g}) over {k} further seed{'s' if k != 1 else ''}"
        ) + (f"; {noise[0].lower()}{noise[1:].rstrip('.')}" if noise else "")
    best = best_first(study.get_trials(deepcopy=False), maximizes(study))
    return "the best trial" if best and best[0].number == trial.number else "as asked"


def load_trial(study_name: str, storage: str, trial: int | None = None) -> ExportedTrial:
    """The best completed trial of a study, or trial number ``trial``."""
    # A damaged attribute (not JSON) surfaces only when the study's attributes are read.
    return _reading(storage, lambda: exported_trial(load_study(study_name, storage), trial))


def exported_trial(study: optuna.Study, trial: int | None = None) -> ExportedTrial:
    """The best completed trial of an open study, or trial number ``trial``."""
    study_name = study.study_name
    chosen = pick_trial(study, trial)
    config = trial_config(chosen)
    if not config:
        raise StudyError(
            f"trial {chosen.number} of study {shown(study_name)} has no 'config' mapping "
            "among its user attributes (was it run by adamtune?)"
        )
    try:
        adam = AdamConfig.from_dict(config, source=f"trial {chosen.number}")
    except TypeError as exc:
        raise StudyError(f"trial {chosen.number}: config: {describe(exc)}") from None
    return ExportedTrial(
        study_name=study_name,
        trial_number=chosen.number,
        value=float(chosen.value or 0.0),
        metric=str(study.user_attrs.get("metric", "value")),
        direction=study.direction.name.lower(),
        config=adam,
        total_steps=_int_or_none(chosen.user_attrs.get("total_steps")),
        seed=_int_or_none(chosen.user_attrs.get("seed")),
        task=study.user_attrs.get("task"),
        best_step=_int_or_none(chosen.user_attrs.get("best_step")),
        chosen=chosen_because(study, chosen),
        precision=str(study.user_attrs.get("precision", "fp32")),
        values=trial_values(chosen),
        record=dict(study.user_attrs.get("task_record") or {}),
    )


def trial_values(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's values of the user's own (adamtune.values); {} where it has none."""
    values = trial.user_attrs.get("values")
    return dict(values) if isinstance(values, dict) else {}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_config(study_name: str, storage: str, trial: int | None = None) -> AdamConfig:
    """The AdamConfig of a study's best trial (or of trial ``trial``)."""
    return load_trial(study_name, storage, trial).config


def population_candidates(study: optuna.Study, baseline_attr: str) -> list[tuple[FrozenTrial, str]]:
    """A population's winner (its schedule) and its best fixed configuration (the best member
    that never copied, the baseline's trial, marked by ``baseline_attr``, aside), best first."""
    ranked = [
        t
        for t in best_first(study.get_trials(deepcopy=False), maximizes(study))
        if baseline_attr not in t.user_attrs and trial_config(t)
    ]
    if not ranked:
        return []
    chosen = [(ranked[0], "schedule" if trial_config(ranked[0]).get("phases") else "fixed")]
    if chosen[0][1] == "schedule":
        fixed = next((t for t in ranked if not trial_config(t).get("phases")), None)
        if fixed is not None:
            chosen.append((fixed, "fixed"))
    return chosen
