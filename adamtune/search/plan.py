"""Resolve a search once: ``prepare(settings) -> Plan`` reads the task, the space, the device,
the precision, the epochs, the patience and the stack width, and runs every check that can
fail before a study exists (an endless run, a model: section no task reads, a task that cannot
train one batch, a stack that cannot be). Everything after it reads the plan.

A worker process receives the plan's plain data (``Plan.for_worker``) and rebuilds only what
cannot cross a process boundary: the task's model factory, imported from its spec again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from adamtune.config.settings import SearchSettings
from adamtune.errors import SpaceError, shown
from adamtune.search.objective import Objective
from adamtune.space.explore import check_explorable
from adamtune.space.search_space import SearchSpace, load_space
from adamtune.tasks import Task, resolve_task
from adamtune.tasks.loader import reading_note
from adamtune.tracking import Tracker
from adamtune.training.first_batch import check_one_batch
from adamtune.training.runner import Runner
from adamtune.training.single import planned_steps, resolve_device, run_precision
from adamtune.training.stacked.sizing import population_rows, stack_rows


@dataclass(frozen=True)
class WorkerPlan:
    """A plan as plain data for a worker process: the settings, the space and the stack width."""

    settings: SearchSettings
    space: SearchSpace
    rows: int


@dataclass(frozen=True)
class Plan:
    settings: SearchSettings
    task: Task
    space: SearchSpace  # for the grid sampler, the space as a grid
    device: torch.device
    epochs: int  # --epochs, else the task's
    patience: int | None  # --patience, else the task's (None: no early stopping)
    rows: int  # trials trained at once as one stacked model (1: one at a time); pbt: members

    def objective(self, tracker: Tracker, **hooks: Any) -> Objective:
        """The objective every trial of this search runs (``hooks``: on_epoch, on_stack, warn)."""
        s = self.settings
        return Objective(
            task=self.task,
            space=self.space,
            seed=s.seed,
            epochs=s.epochs,  # None: the task's (a loop then says it never read --epochs)
            device=self.device,
            optimizer=s.optimizer,
            tracker=tracker,
            patience=self.patience,
            precision=s.precision,
            **hooks,
        )

    def runner(self, rows: int | None = None) -> Runner:
        """How the baseline and confirmation train: as the trials do, ``rows`` at a time."""
        s = self.settings
        return Runner(
            self.task,
            s.epochs,
            self.device,
            s.optimizer,
            self.patience,
            self.rows if rows is None else rows,
            s.precision,
            self.space.model,
        )

    def for_worker(self, **changes: Any) -> WorkerPlan:
        return WorkerPlan(replace(self.settings, **changes), self.space, self.rows)


def prepare(
    settings: SearchSettings,
    *,
    task: Task | None = None,
    space: SearchSpace | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Plan:
    """Resolve ``settings`` (``task`` and ``space``, when given, are the resolved
    ``settings.task`` and ``settings.space``) and refuse, in one line, what cannot run."""
    task = task or resolve_task(settings.task)
    note = reading_note(settings.task)
    if note:
        warn(note)
    space = space or load_space(settings.space)
    if settings.sampler == "grid":
        space = space.for_grid()
    device = resolve_device(settings.device)
    precision = run_precision(settings.precision, device)  # refuses bf16 where it cannot run
    epochs = settings.epochs or task.epochs
    planned_steps(task, epochs)  # refuses an endless run up front
    check_values_reach(task, space)
    check_one_batch(task, device, precision)  # a task that cannot train fails now, not an epoch in
    if settings.strategy == "pbt":
        check_explorable(space)
        rows = population_rows(settings, task, device)  # refuses a task that cannot stack
    else:
        rows = stack_rows(settings, task, device, warn)  # refuses a stack that cannot be
    patience = settings.patience if settings.patience is not None else task.patience
    return Plan(settings, task, space, device, epochs, patience, rows)


def from_worker_plan(plain: WorkerPlan) -> Plan:
    """A worker's plan: the parent resolved and checked everything; only the task's model
    factory is imported again (objects do not cross a spawn). A worker stacks at most its
    share of the trials."""
    settings = plain.settings
    task = resolve_task(settings.task)
    rows = plain.rows if settings.n_trials is None else max(1, min(plain.rows, settings.n_trials))
    patience = settings.patience if settings.patience is not None else task.patience
    device = resolve_device(settings.device)  # the worker's own GPU (CUDA_VISIBLE_DEVICES)
    return Plan(settings, task, plain.space, device, settings.epochs or task.epochs, patience, rows)


def check_values_reach(task: Task, space: SearchSpace) -> None:
    """A space's model: section needs a task that reads values: a loop, or a factory that
    takes the trial."""
    if space.model and task.train_loop is None and task.per_trial is None:
        names = ", ".join(space.model)
        raise SpaceError(
            f"{space.source}: model: {names}: task {shown(task.name)} reads no values of its "
            "own; make its factory take the trial (def make_task(trial) -> Task) or use a "
            "training loop, and read them with trial.suggest_float/suggest_int/"
            "suggest_categorical"
        )
