"""How wide a stack is: ``--stack N`` checked against the task and the memory, or for ``auto``
as many rows as the memory at hand allows; and how wide confirmation's stack can be."""

from __future__ import annotations

from collections.abc import Callable

import torch

from adamtune.config.settings import MAX_STACK, SearchSettings
from adamtune.errors import StudyError, describe, shown, user_location
from adamtune.tasks import Task

AUTO_ROWS = {"cpu": 16, "cuda": 64}  # --stack auto, before the memory cap


MEMORY_SHARE = 0.25  # of free memory that a stack's parameters, gradients and moments may take


def stack_rows(
    settings: SearchSettings, task: Task, device: torch.device, warn: Callable[[str], None]
) -> int:
    """How many trials to train at once: ``--stack N``, or for ``auto`` as many as the task's
    model allows within the memory at hand: a plain MLP on tensors always, any other model
    the width that a few timed steps show trains the most rows per second, or one at a time
    (measure.py), in one line. A task that cannot stack refuses an explicit N and makes
    ``auto`` one at a time, with one line saying why."""
    if settings.stack == 1:
        return 1
    auto = settings.stack == "auto"
    if auto and (settings.optimizer != "fused" or settings.n_jobs != 1 or settings.n_trials == 1):
        return 1  # what the user chose (or one trial) cannot stack: one at a time, as asked
    if auto and settings.precision == "fp16":
        warn(
            "--stack auto: fp16 trials cannot be stacked (the loss scaler is one model's); one at a time"
        )
        return 1
    from adamtune.training.stacked.model import why_not_stackable

    reason = why_not_stackable(task)
    if reason is not None:
        if not auto:
            raise StudyError(
                f"--stack {settings.stack}: task {shown(task.name)} cannot be stacked: {reason}; "
                "use --stack 1"
            )
        warn(f"--stack auto: task {shown(task.name)} cannot be stacked ({reason}); one at a time")
        return 1
    per_row = _row_bytes(task)
    free = _free_memory(device)
    if not auto:
        rows = int(settings.stack)
        if free and rows * per_row > free:
            raise StudyError(
                f"--stack {rows}: {rows} rows of task {shown(task.name)} need about "
                f"{_gigabytes(rows * per_row)} for parameters, gradients and Adam's moments, more "
                f"than the {_gigabytes(free)} free on {device.type}; use --stack auto or fewer rows"
            )
        return rows
    rows = AUTO_ROWS.get(device.type, 8)
    if free and per_row:
        rows = max(1, min(rows, int(free * MEMORY_SHARE // per_row)))
    if settings.n_trials is not None:
        rows = min(rows, settings.n_trials)
    from adamtune.training.stacked.measure import choose_width, is_plain_mlp

    if rows == 1 or is_plain_mlp(task):
        return rows
    try:
        choice = choose_width(task, device, settings.precision, rows)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (the user's code in a timing run, even sys.exit)
        warn(
            f"--stack auto: task {shown(task.name)} raised {describe(exc)}{user_location(exc)} "
            "while a few steps were timed; one at a time (each trial reports its own error)"
        )
        return 1
    warn(choice.line())
    return choice.rows


def population_rows(settings: SearchSettings, task: Task, device: torch.device) -> int:
    """How many members a population (--strategy pbt) has: ``--population``, else the stack's
    width (``--stack N``, or for ``auto`` as many rows as the memory allows). A task that
    cannot stack, or members that do not fit in memory, are refused in one line."""
    from adamtune.training.stacked.model import why_not_stackable

    reason = why_not_stackable(task)
    if reason is not None:
        raise StudyError(
            f"--strategy pbt: task {shown(task.name)} cannot be stacked ({reason}); a population "
            "trains as one stack: use --strategy search"
        )
    per_row, free = _row_bytes(task), _free_memory(device)
    flag = "--population"
    if settings.population is not None:
        rows = settings.population
    elif settings.stack != "auto":
        rows, flag = int(settings.stack), "--stack"
    else:
        rows = AUTO_ROWS.get(device.type, 8)
        if free and per_row:
            rows = max(2, min(rows, int(free * MEMORY_SHARE // per_row)))
    if free and rows * per_row > free:
        raise StudyError(
            f"{flag} {rows}: {rows} members of task {shown(task.name)} need about "
            f"{_gigabytes(rows * per_row)} for parameters, gradients and Adam's moments, more "
            f"than the {_gigabytes(free)} free on {device.type}; use fewer members"
        )
    return rows


def _row_bytes(task: Task) -> int:
    """A row's parameters, gradients and Adam's two moments."""
    return 4 * sum(p.numel() * p.element_size() for p in task.build_model().parameters())


def confirmation_rows(task: Task, device: torch.device, rows: int, wanted: int) -> int:
    """How wide a stack confirmation trains in: every (configuration, seed) pair at once where
    the memory allows it (one 18-row stack of mnist1d-mlp takes 6.0 s, three of 6 rows 12.3 s
    here), never narrower than the search's ``rows``; 1 where the search did not stack."""
    if rows == 1:
        return 1
    free, per_row = _free_memory(device), _row_bytes(task)
    fits = int(free * MEMORY_SHARE // per_row) if free and per_row else wanted
    return max(rows, min(wanted, fits, MAX_STACK))


def _gigabytes(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0
