"""Layer 4: reading finished studies: tables, gain over the baseline, export as code; no torch."""

from __future__ import annotations

from adamtune._util.lazy import lazy_getattr

_EXPORTS = {
    "list_studies": "adamtune.results.studies",
    "load_study": "adamtune.results.studies",
    "maximizes": "adamtune.results.studies",
    "best_first": "adamtune.results.studies",
    "top_trials": "adamtune.results.studies",
    "trial_config": "adamtune.results.studies",
    "pick_trial": "adamtune.results.studies",
    "confirmed_winner": "adamtune.results.studies",
    "chosen_because": "adamtune.results.studies",
    "load_trial": "adamtune.results.studies",
    "exported_trial": "adamtune.results.studies",
    "trial_values": "adamtune.results.studies",
    "load_config": "adamtune.results.studies",
    "FRACTION_SUFFIXES": "adamtune.results.gain",
    "Baseline": "adamtune.results.gain",
    "Candidate": "adamtune.results.gain",
    "Confirmation": "adamtune.results.gain",
    "mean_sd": "adamtune.results.gain",
    "improvement": "adamtune.results.gain",
    "is_fraction": "adamtune.results.gain",
    "gain_text": "adamtune.results.gain",
    "study_baseline": "adamtune.results.gain",
    "study_confirmation": "adamtune.results.gain",
    "best_line": "adamtune.results.gain",
    "confirmed_line": "adamtune.results.gain",
    "confirmation_rows": "adamtune.results.gain",
    "summary_metrics": "adamtune.results.gain",
    "format_table": "adamtune.results.report",
    "trial_value_text": "adamtune.results.report",
    "config_rows": "adamtune.results.report",
    "best_trial_summary": "adamtune.results.report",
    "top_trials_table": "adamtune.results.report",
    "gain_report": "adamtune.results.report",
    "gain_cell": "adamtune.results.report",
    "TORCH_DEFAULTS": "adamtune.results.export",
    "ExportedTrial": "adamtune.results.export",
    "PRECISION_USE": "adamtune.results.export",
    "render": "adamtune.results.export",
    "write_export": "adamtune.results.export",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
