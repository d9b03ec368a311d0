"""Which of Adam's values mattered: Optuna's PED-ANOVA importances (how much each parameter
decides whether a trial reaches the study's top 10%), for ``adamtune show`` and the MLflow
plot alike. PED-ANOVA needs no scikit-learn, unlike Optuna's default fANOVA."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

MIN_TRIALS_FOR_IMPORTANCES = 5  # completed trials below which any ranking is noise


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, int]:
    """(parameter -> importance, largest first, or None where they cannot be told) and the
    number of completed trials they rest on."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    if done < MIN_TRIALS_FOR_IMPORTANCES:
        return None, done
    try:
        found = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError):  # e.g. no parameter varies
        return None, done
    return (dict(found) if found else None), done


def importance_report(study: optuna.Study) -> str:
    """A short table of the importances and a line on what they rest on; a note where there
    are too few trials."""
    from adamtune.results.report import format_table

    found, done = importances(study)
    if found is None:
        if done < MIN_TRIALS_FOR_IMPORTANCES:
            return (
                f"Parameter importance: {done} completed trial{'s' if done != 1 else ''} are too "
                f"few to tell (at least {MIN_TRIALS_FOR_IMPORTANCES}); run more trials."
            )
        return "Parameter importance: cannot be told (no searched parameter varies)."
    rows: list[list[Any]] = [[name, f"{value:.3f}"] for name, value in found.items()]
    return (
        f"Parameter importance (PED-ANOVA over {done} completed trials: how much each decides "
        "reaching the top 10%):\n" + format_table(["parameter", "importance"], rows)
    )
