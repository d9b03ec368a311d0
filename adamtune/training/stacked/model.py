"""The stacked model: N copies of one task's model as one, a row each, and the check that a
task's model can be stacked at all.

Every parameter and buffer of the N copies becomes one tensor with a leading dimension of N
(``torch.func.stack_module_state``), so every row keeps its own BatchNorm statistics. A
training step computes every row's loss in one call: ``vmap`` over the task's own loss
(``compute_loss(model, batch)``, or ``loss(model(x), y)``) with a per-row functional model, so
models that return tuples, dicts or output objects, and hooks that call ``model(**batch)``, run
unchanged. A plain MLP (nn.Sequential of Linear layers, elementwise activations and dropout,
every built-in MLP) runs as batched matrix products instead, about 1.7x faster per row.
Random layers draw each row's own noise (adamtune.training.stacked.layers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from adamtune.tasks.base import Task, is_tensor_pair
from adamtune.training.precision import Precision, as_float
from adamtune.training.stacked.layers import per_row, row_noise, why_not_layer

# A row's training loss: (model, batch) -> scalar (the task's compute_loss, or its loss)
RowLoss = Callable[[Any, Any], torch.Tensor]


def why_not_stackable(task: Task) -> str | None:
    """Why ``task``'s model cannot be trained stacked, or None when it can: a layer with no
    per-row version, a model, loss or hook that fails or that torch.func cannot batch, or a
    stacked step that does not give what the model alone gives (tried on one real training
    batch, with a shared batch and with one batch per row). User code that raises anything
    here, SystemExit included, makes the task one not to stack: the trials then meet the same
    error one at a time, each failing with its reason."""
    try:
        return _why_not_stackable(task)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (user code: build_model, forward, loss)
        return f"trying a stacked step raised {_first_line(exc)}"


def refuse_unstackable(task: Task, prec: Precision, checked: bool, what: str) -> None:
    """Raise ValueError, in one line, where ``task``'s ``what`` (trials, members) cannot
    train as one stack: fp16's loss scaler is one model's; ``checked``: why_not_stackable
    has answered already."""
    if prec.scaler is not None:
        raise ValueError(f"fp16 {what} cannot be stacked: their loss scaler is one model's")
    reason = None if checked else why_not_stackable(task)
    if reason:
        raise ValueError(f"task {task.name!r} cannot be stacked: {reason}")


def _why_not_stackable(task: Task) -> str | None:
    if task.train_loop is not None:
        return "it is a training loop of its own, train(trial)"
    if task.per_trial is not None:
        return "its factory takes the trial, so each trial builds its own task from its values"
    model = task.build_model()
    if not isinstance(model, nn.Module):
        return f"build_model() returned {type(model).__name__}, not a torch.nn.Module"
    reason = why_not_layer(model)
    if reason is not None:
        return reason
    batch = first_batch(task)
    loss = task_loss(task)
    alone = per_row(model)
    keys = torch.tensor([11, 12])
    expected = []
    try:
        for key in keys:  # the row alone: the same per-row layers, the row's key, no vmap
            with row_noise(key):
                expected.append(loss(alone, batch).detach().reshape(-1))
    except Exception as exc:  # the trials meet it one at a time, each failing with it
        return f"its loss on one training batch of the model alone raised {_first_line(exc)}"
    try:
        stack = StackedModel(model, [model, copy.deepcopy(model)])
        shared = stack.losses(loss, batch, keys)
        if shared.shape != (2,):  # one number per row, as train() takes loss.item()
            return f"its loss gives shape {tuple(shared.shape[1:])} per model, not one number"
        shared.sum().backward()
        stack = StackedModel(model, [model, copy.deepcopy(model)])
        each = stack.losses(loss, stack_batches([batch, batch]), keys, per_row=True)
        each.sum().backward()
    except Exception as exc:  # torch.func could not batch it
        return f"torch.func cannot stack its model ({_first_line(exc)})"
    want = torch.cat(expected)
    if want.shape != (2,):
        return f"its loss gives shape {tuple(expected[0].shape)} per model, not one number"
    for got in (shared, each):
        if not torch.allclose(got.detach().float(), want.float(), rtol=1e-4, atol=1e-5):
            return "its stacked forward pass does not give what the model alone gives"
    return None


# What torch.func's refusals mean for a user's model, by a phrase of their message.
_VMAP_MEANINGS = (
    (
        "randomness error mode",
        "its forward pass draws random numbers outside an nn.Dropout module (F.dropout, the "
        "dropout inside nn.TransformerEncoderLayer or nn.MultiheadAttention, torch.rand*), "
        "which a stack cannot yet draw per row",
    ),
    (
        "data-dependent control flow",
        "its forward pass branches on tensor values (an if on a tensor, .item(), as Hugging "
        "Face's attention-mask handling does)",
    ),
)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: message``: the message's first sentence, cut at a word (never mid-word)."""
    text = str(exc).strip()
    for phrase, meaning in _VMAP_MEANINGS:
        if phrase in text:
            return f"{type(exc).__name__}: {meaning}"
    first = text.splitlines()[0] if text else ""
    first = first.split(". ", 1)[0]
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0] + " …"
    return f"{type(exc).__name__}: {first}"


def first_batch(task: Task) -> Any:
    """One training batch, on the CPU, as a trial's first step sees it."""
    from adamtune.training.batches import batches
    from adamtune.training.precision import Precision

    if is_tensor_pair(task.train):
        x, y = task.train
        return x[: task.batch_size], y[: task.batch_size]
    head = torch.utils.data.Subset(task.train, range(min(task.batch_size, len(task.train))))
    single = copy.copy(task)
    object.__setattr__(single, "num_workers", 0)
    return next(iter(batches(single, head, torch.device("cpu"), Precision())))


def task_loss(task: Task) -> RowLoss:
    """The task's training loss of one batch as a function of (model, batch)."""
    from adamtune.training.batches import step_loss

    return lambda model, batch: step_loss(task, model, batch)


def stack_batches(batches: list[Any]) -> Any:
    """One batch per row as one batch with a leading row dimension (every tensor stacked)."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    flat = [tree_flatten(b) for b in batches]
    leaves = [torch.stack(parts) for parts in zip(*(f[0] for f in flat), strict=True)]
    return tree_unflatten(leaves, flat[0][1])


def same_shapes(batches: list[Any]) -> bool:
    from torch.utils._pytree import tree_flatten

    flat = [tree_flatten(b) for b in batches]
    first_leaves, spec = flat[0]
    return all(
        s == spec
        and all(
            isinstance(a, torch.Tensor) and a.shape == b.shape
            for a, b in zip(leaves, first_leaves, strict=True)
        )
        for leaves, s in flat
    )


ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity)


class _RowModel:
    """One row of the stack as a model a user's hook can call: ``model(...)`` runs the task's
    module on the row's parameters and buffers; attributes come from the module."""

    def __init__(self, base: nn.Module, state: dict[str, Any]) -> None:
        self._base, self._state = base, state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch.func import functional_call

        return functional_call(self._base, self._state, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


class StackedModel:
    """The stacked parameters and buffers of N copies of one model, each row's loss in one
    call, and each row as a plain module for evaluation."""

    def __init__(self, template: nn.Module, models: list[nn.Module]) -> None:
        from torch.func import stack_module_state

        params, self.buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.names = list(params)
        self.params = [nn.Parameter(params[name].detach()) for name in self.names]
        self.template = template  # the task's module: evaluation loads a row into it
        self.base = per_row(template).to("meta")
        self.layers = _mlp_layers(self.base)
        self._row_losses: RowLosses | None = None

    @property
    def rows(self) -> int:
        return self.params[0].shape[0]

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def losses(
        self, loss: RowLoss, batch: Any, keys: torch.Tensor, per_row: bool = False
    ) -> torch.Tensor:
        """[rows]: every row's training loss on ``batch`` (shared; with ``per_row``, each row's
        own: every tensor [rows, ...]); ``keys`` ([rows]) seed each row's random layers."""
        return self._losses(self.params, self.buffers, loss, batch, keys, per_row)

    def group_losses(
        self, task: Task, groups: list[tuple[list[int], Any]], keys: torch.Tensor
    ) -> torch.Tensor:
        """[rows]: every row's training loss, each group of rows (positions) on its own batch;
        the groups' buffers (BatchNorm statistics) are written back."""
        loss = task_loss(task)
        out: list[torch.Tensor] = []
        order: list[int] = []
        for positions, batch in groups:
            index = torch.tensor(positions, device=self.params[0].device)
            params = [p.index_select(0, index) for p in self.params]
            buffers = {k: b.index_select(0, index) for k, b in self.buffers.items()}
            out.append(self._losses(params, buffers, loss, batch, keys[index], False))
            with torch.no_grad():
                for k, b in buffers.items():
                    self.buffers[k].index_copy_(0, index, b)
            order += positions
        where = torch.tensor(order).argsort().to(out[0].device)
        return torch.cat(out).index_select(0, where)

    def _losses(
        self,
        params: Sequence[torch.Tensor],
        buffers: dict[str, torch.Tensor],
        loss: RowLoss,
        batch: Any,
        keys: torch.Tensor,
        per_row: bool,
    ) -> torch.Tensor:
        from torch.func import vmap

        def one(params: tuple[torch.Tensor, ...], buffers: Any, key: Any, batch: Any) -> Any:
            state = {**dict(zip(self.names, params, strict=True)), **buffers}
            with row_noise(key):
                out = loss(_RowModel(self.base, state), batch)
            return out.reshape(()) if out.numel() == 1 else out

        with _attention_for_vmap():
            return vmap(one, in_dims=(0, 0, 0, 0 if per_row else None), randomness="error")(
                tuple(params), buffers, keys, batch
            )

    def task_losses(
        self, task: Task, batch: Any, keys: torch.Tensor, per_row: bool = False
    ) -> torch.Tensor:
        """[rows]: every row's training loss for ``task``: a plain MLP's as batched matrix
        products and the task's loss on them (vmapped when that gives the same), any other
        model's through ``losses``."""
        if self.layers is not None and task.compute_loss is None and is_tensor_pair(batch):
            x, y = batch
            if x.dim() == 2 + per_row:
                if self._row_losses is None:
                    self._row_losses = RowLosses(task.loss_of)
                return self._row_losses(self.mlp_outputs(x, keys, per_row), y, per_row)
        return self.losses(task_loss(task), batch, keys, per_row)

    def mlp_outputs(self, x: torch.Tensor, keys: torch.Tensor, per_row: bool) -> torch.Tensor:
        """[rows, batch, ...]: a plain MLP's outputs as batched matrix products."""
        assert self.layers is not None
        h = x if per_row else x.reshape(1, x.shape[0], -1).expand(self.rows, -1, -1)
        at = 0
        with row_noise(keys):
            for layer in self.layers:
                if isinstance(layer, nn.Linear):
                    weight = self.params[at]
                    if layer.bias is not None:
                        bias = self.params[at + 1].unsqueeze(1)
                        h = torch.baddbmm(bias, h, weight.transpose(1, 2))
                        at += 2
                    else:
                        h = torch.bmm(h, weight.transpose(1, 2))
                        at += 1
                else:
                    h = layer(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every row's outputs, [rows, batch, ...], for the shared input ``x``, in the mode
        the stack is in (evaluation: eval)."""
        if self.layers is not None and x.dim() == 2:
            return self.mlp_outputs(x, torch.zeros(self.rows, dtype=torch.int64), False)
        from torch.func import functional_call, vmap

        def one(params: tuple[torch.Tensor, ...], buffers: Any, x: torch.Tensor) -> Any:
            named = dict(zip(self.names, params, strict=True))
            return functional_call(self.base, (named, buffers), (x,))

        with _attention_for_vmap():
            return vmap(one, in_dims=(0, 0, None))(tuple(self.params), self.buffers, x)

    def row_module(self, row: int, state: tuple[list[torch.Tensor], dict] | None = None) -> Any:
        """The task's own module holding row ``row``'s parameters and buffers (or ``state``,
        a row's saved (parameters, buffers)), for evaluation one row at a time."""
        params, buffers = state or self.row_state(row)
        named = dict(self.template.named_parameters())
        held = dict(self.template.named_buffers())
        with torch.no_grad():
            for name, value in zip(self.names, params, strict=True):
                named[name].copy_(value)
            for name, value in buffers.items():
                held[name].copy_(value)
        return self.template

    def row_state(self, row: int) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """A copy of row ``row``'s parameters and buffers."""
        params = [p[row].detach().clone() for p in self.params]
        return params, {k: b[row].clone() for k, b in self.buffers.items()}

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in ``rows`` (positions in the current stack)."""
        index = torch.tensor(rows, device=self.params[0].device)
        self.params = [nn.Parameter(p.detach().index_select(0, index)) for p in self.params]
        self.buffers = {k: b.index_select(0, index) for k, b in self.buffers.items()}

    def append(self, models: list[nn.Module]) -> None:
        """Add one row per model after the current rows."""
        from torch.func import stack_module_state

        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.params = [
            nn.Parameter(torch.cat([old.detach(), params[name].detach()]))
            for old, name in zip(self.params, self.names, strict=True)
        ]
        self.buffers = {k: torch.cat([b, buffers[k]]) for k, b in self.buffers.items()}


@contextmanager
def _attention_for_vmap() -> Iterator[None]:
    """Scaled dot-product attention as its math (matmul and softmax), which vmap batches:
    the fused kernels have no batching rule and would run row by row, with a warning."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _mlp_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a plain MLP (inputs flattened to [batch, features]; one Linear layer is
    one too), or None."""
    if len(list(model.buffers())):
        return None
    if type(model) is nn.Linear:
        return [model]
    if type(model) is not nn.Sequential:
        return None
    layers = list(model)
    if not layers or not isinstance(layers[0], nn.Linear):
        return None
    if not all(type(layer) in (nn.Linear, nn.Dropout, *ELEMENTWISE) for layer in layers):
        return None
    return layers


class RowLosses:
    """Every row's loss on stacked outputs in one vmapped call of the task's loss when that
    gives what calling it row by row gives (checked on the first batch), else row by row."""

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.loss = loss
        self.vmapped: bool | None = None

    def __call__(
        self, outputs: torch.Tensor, targets: torch.Tensor, per_row: bool = False
    ) -> torch.Tensor:
        """Each row's loss; ``targets`` shared ([batch, ...]) or, with ``per_row``, each row's
        own ([rows, batch, ...])."""
        outputs = as_float(outputs)
        if self.vmapped is None:
            one_by_one = self._loop(outputs, targets, per_row)
            try:
                together = self._vmap(outputs, targets, per_row)
                self.vmapped = together.shape == one_by_one.shape and torch.allclose(
                    together, one_by_one, rtol=1e-6, atol=0
                )
            except Exception:  # a loss torch.func cannot batch
                self.vmapped = False
            return one_by_one
        if self.vmapped:
            return self._vmap(outputs, targets, per_row)
        return self._loop(outputs, targets, per_row)

    def _loop(self, outputs: torch.Tensor, targets: torch.Tensor, per_row: bool) -> torch.Tensor:
        if per_row:
            return torch.stack([self.loss(o, t) for o, t in zip(outputs, targets, strict=True)])
        return torch.stack([self.loss(row, targets) for row in outputs])

    def _vmap(self, outputs: torch.Tensor, targets: torch.Tensor, per_row: bool) -> torch.Tensor:
        from torch.func import vmap

        return vmap(self.loss, in_dims=(0, 0 if per_row else None))(outputs, targets)
