"""The study's sampler: Optuna's, by name, seeded so that processes sharing a study differ."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from adamtune.config.settings import SAMPLERS, SEED_LIMIT
from adamtune.errors import StudyError, shown
from adamtune.space.search_space import SearchSpace
from adamtune.storage.optuna_private import incremental_groups

__all__ = ["SeededByFirstTrial", "make_sampler"]


def make_sampler(
    name: str, seed: int, space: SearchSpace | None = None
) -> optuna.samplers.BaseSampler:
    if name == "grid":
        if space is None:
            raise StudyError("--sampler grid: needs the search space")
        return optuna.samplers.GridSampler(space.for_grid().grid(), seed=seed)
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate/group are stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
        incremental_groups(sampler)  # the same samples, without refolding every trial
        return sampler
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():  # a Python warning with a file path is no message
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise StudyError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {shown(name)}")


class SeededByFirstTrial(optuna.samplers.BaseSampler):
    """The sampler ``name``, seeded with ``seed`` plus the number of the first trial this
    process asks, and built then.

    Trial numbers are unique across every process of a study, so processes started together
    (``--workers``, or separately started workers on one database) draw different points,
    where one seed would have them all draw the same ones; a resumed study draws new points,
    not a replay of its first. A study run by one process at a time stays reproducible: a new
    study's first trial is 0, so ``--seed S`` seeds the sampler with S, as before."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.inner: optuna.samplers.BaseSampler | None = None

    def _sampler(self) -> optuna.samplers.BaseSampler:
        if self.inner is None:  # asked before any trial (a caller's own use): the plain seed
            self.inner = make_sampler(self.name, self.seed)
        return self.inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.inner is None:
            self.inner = make_sampler(self.name, (self.seed + trial.number) % SEED_LIMIT)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        return self._sampler().infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: Any) -> Any:
        return self._sampler().sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, distribution: Any
    ) -> Any:
        return self._sampler().sample_independent(study, trial, param_name, distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any
    ) -> None:
        self._sampler().after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler().reseed_rng()
