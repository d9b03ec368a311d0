"""``--warm-start SOURCE[,SOURCE...]``: train the best configurations found elsewhere first.

A SOURCE is a study in ``--storage`` (its name), a study in another storage
(``NAME@STORAGE_URL``), or a file written by ``adamtune export --format yaml`` or ``json``.
Each study gives its ``WARM_TOP`` best completed trials, each file its one configuration. They
are deduplicated, clipped to this study's space (one line says what moved or was skipped), and
enqueued as new trials, so the first stack trains them, before the sampler's own points; the
sampler then learns from their results in this study. Nothing is told to the sampler as a result
from another task, and the source study is only read (read-only storage), never written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from adamtune.config.adam import AdamConfig
from adamtune.errors import ConfigError, StudyError, shown
from adamtune.space.search_space import SearchSpace
from adamtune.space.warm import warm_params
from adamtune.storage.optuna_private import asked_params

WARM_TOP = 4  # configurations taken from each source study, best first
WARM_ATTR = "warm_start"  # trial user attribute: where the enqueued configuration came from
FILE_SUFFIXES = (".yaml", ".yml", ".json")


def warm_sources(text: str) -> list[str]:
    """The sources in ``--warm-start``'s comma-separated value."""
    sources = [part.strip() for part in text.split(",") if part.strip()]
    if not sources:
        raise ConfigError(f"--warm-start: expected a study name or an exported file, got {text!r}")
    return sources


def warm_configs(source: str, storage: str) -> list[tuple[str, AdamConfig]]:
    """(label, configuration) for one source, best first."""
    if source.endswith(FILE_SUFFIXES):
        if not Path(source).is_file():
            raise ConfigError(f"--warm-start {source!r}: no such file")
        try:
            return [(Path(source).name, AdamConfig.from_file(source))]
        except ConfigError as exc:
            raise ConfigError(f"--warm-start: {exc}") from None
    name, at, url = source.partition("@")
    if not (at and ("://" in url or url.startswith("journal:"))):
        name, url = source, storage
    from adamtune.results.studies import best_first, load_study, maximizes, trial_config

    try:
        study = load_study(name, url)  # read-only: the source is never written
    except StudyError as exc:
        raise StudyError(f"--warm-start {source!r}: {exc}") from None
    best = [t for t in best_first(study.get_trials(deepcopy=False), maximizes(study))]
    configs = []
    for trial in best:
        data = trial_config(trial)
        if not data:
            continue
        try:
            configs.append((f"{name} trial {trial.number}", AdamConfig.from_dict(data)))
        except (ConfigError, TypeError):
            continue  # a damaged configuration is not a starting point
        if len(configs) == WARM_TOP:
            break
    if not configs:
        raise StudyError(
            f"--warm-start {source!r}: study {shown(name)} has no completed trial with an "
            "adamtune configuration to start from"
        )
    return configs


def read_warm_start(text: str, storage: str) -> list[tuple[str, AdamConfig]]:
    """Every source's configurations, read before the study is opened: a bad source is one
    line and changes nothing."""
    return [config for source in warm_sources(text) for config in warm_configs(source, storage)]


def enqueue_warm_start(
    study: optuna.Study,
    space: SearchSpace,
    found: list[tuple[str, AdamConfig]],
    text: str,
    say: Callable[[str], None],
) -> int:
    """Enqueue ``found`` (read_warm_start's, clipped to ``space``, deduplicated) as new
    trials; how many."""
    seen: list[dict[str, object]] = []
    moved: list[str] = []
    for label, config in found:
        params, notes = warm_params(space, config)
        if params is None:
            moved.append(f"{label} skipped: {notes[0]}")
            continue
        fixed = [n.removesuffix(" (the space fixes it)") for n in notes if n.endswith("fixes it)")]
        clipped = [n for n in notes if not n.endswith("fixes it)")]
        if clipped:
            moved.append(f"{label} clipped: {', '.join(clipped)}")
        if fixed:
            moved.append(f"{label} takes the space's {', '.join(fixed)}")
        if params in seen:
            continue
        seen.append(params)
    existing = [asked_params(t) for t in study.get_trials(deepcopy=False)]
    new = [params for params in seen if params not in existing]
    for params in new:
        study.enqueue_trial(params, user_attrs={WARM_ATTR: True})
    there = len(seen) - len(new)
    if there:
        moved.append(f"{there} already in the study")
    say(
        f"Warm start: {len(new)} configuration{'s' if len(new) != 1 else ''} from {text} "
        f"train first{' (' + '; '.join(moved) + ')' if moved else ''}."
    )
    return len(new)
