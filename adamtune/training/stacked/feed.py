"""Each step's batches for the rows of a stack: every row reads the batch that its own run
alone would read at that step, and rows in the same epoch of the same seed share one stream.

A trial's batch order is one ``randperm`` per epoch from a generator seeded with its seed, as
train() draws it (``EpochOrders`` regenerates any epoch's order from the generator's saved
state). Tensor splits are sliced by it on the device. Dataset splits are read by a DataLoader
in that order (``collate_fn``, ``num_workers``), once per (seed, epoch) group of rows: a row
refilled at another epoch gets its own stream. With one group every row shares the batch;
with several, each row gets its group's batch, stacked into one batch with a row dimension,
or, where the groups' batches differ in shape (a collate_fn that pads to the longest), the
step runs group by group (``Step.groups``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adamtune.tasks.base import Task, is_tensor_pair, split_size
from adamtune.training.batches import loaded
from adamtune.training.precision import Precision
from adamtune.training.stacked.model import same_shapes, stack_batches


@dataclass
class Step:
    """One step's input: ``batch`` shared by every row, or with ``per_row`` one per row (every
    tensor [rows, ...]); or ``groups``: (row positions, their shared batch) when the groups'
    batches cannot be stacked."""

    batch: Any = None
    per_row: bool = False
    groups: list[tuple[list[int], Any]] | None = None


class Feed:
    """The training batches of ``task`` for rows identified by (seed, epoch)."""

    def __init__(self, task: Task, device: torch.device, prec: Precision) -> None:
        self.task, self.device, self.prec = task, device, prec
        self.tensors = is_tensor_pair(task.train)
        if self.tensors:
            x, y = task.train
            self.x, self.y = prec.inputs(x.to(device)), y.to(device)
        self.size = split_size(task.train)
        self.orders: dict[int, EpochOrders] = {}  # by seed

    def epoch(self, rows: Sequence[tuple[int, int]]) -> Iterator[Step]:
        """One epoch's steps for rows at (seed, epoch index) each, in stack order."""
        for seed in [s for s in self.orders if all(s != r[0] for r in rows)]:
            del self.orders[seed]  # no row trains with that seed any more
        for seed, _ in rows:
            if seed not in self.orders:
                device = self.device if self.tensors else torch.device("cpu")
                self.orders[seed] = EpochOrders(self.size, seed, device)
        for seed, order in self.orders.items():
            order.keep({epoch for s, epoch in rows if s == seed})
        groups = list(dict.fromkeys(rows))  # (seed, epoch), in order of first row
        if self.tensors:
            yield from self._sliced(rows, groups)
        else:
            yield from self._loaded(rows, groups)

    def _sliced(
        self, rows: Sequence[tuple[int, int]], groups: list[tuple[int, int]]
    ) -> Iterator[Step]:
        batch_size = self.task.batch_size
        for start in range(0, self.size, batch_size):
            if len(groups) == 1:
                seed, epoch = groups[0]
                index = self.orders[seed].get(epoch)[start : start + batch_size]
                yield Step((self.x[index], self.y[index]))
            else:  # [rows, batch]: each row's batch from its own seed's and epoch's order
                index = torch.stack(
                    [self.orders[s].get(e)[start : start + batch_size] for s, e in rows]
                )
                yield Step((self.x[index], self.y[index]), per_row=True)

    def _loaded(
        self, rows: Sequence[tuple[int, int]], groups: list[tuple[int, int]]
    ) -> Iterator[Step]:
        streams = [
            loaded(
                self.task,
                self.task.train,
                self.orders[seed].get(epoch).tolist(),
                seed,
                self.device,
                self.prec,
            )
            for seed, epoch in groups
        ]
        at = {group: g for g, group in enumerate(groups)}
        for step_batches in zip(*streams, strict=True):
            if len(groups) == 1:
                yield Step(step_batches[0])
                continue
            mine = [step_batches[at[row]] for row in rows]
            if same_shapes(mine):
                yield Step(stack_batches(mine), per_row=True)
            else:
                positions = [[r for r, row in enumerate(rows) if row == g] for g in groups]
                yield Step(groups=list(zip(positions, step_batches, strict=True)))


class EpochOrders:
    """The batch order train() uses in each epoch (one randperm per epoch from one generator
    seeded with ``seed``), regenerated from the generator's saved state for any epoch a row is
    in, and kept only while some row is in it: rows at many epochs, never every epoch's order
    of a large data set at once."""

    def __init__(self, size: int, seed: int, device: torch.device) -> None:
        self.size, self.device = size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.states: list[torch.Tensor] = []  # the generator's state as epoch e starts
        self.cached: dict[int, torch.Tensor] = {}

    def get(self, epoch: int) -> torch.Tensor:
        if epoch not in self.cached:
            while len(self.states) <= epoch:
                self.states.append(self.generator.get_state())
                torch.randperm(self.size, generator=self.generator)
            replay = torch.Generator()
            replay.set_state(self.states[epoch])
            self.cached[epoch] = torch.randperm(self.size, generator=replay).to(self.device)
        return self.cached[epoch]

    def keep(self, epochs: set[int]) -> None:
        """Forget the orders of epochs no row is in."""
        for epoch in [e for e in self.cached if e not in epochs]:
            del self.cached[epoch]
