"""What makes a study's trials comparable, beyond the model: the data, its split sizes, the
epochs, the batch size, the metric and its direction. Stored on the study when it is made
(the study attribute ``task_record``) and compared when it is resumed, so a study resumed
after the data or the recipe changed is refused instead of mixing trials of two problems.

The data digest is cheap: for tensors their shapes, dtypes and a hash of their bytes (of
4096 rows spread over a tensor larger than 256 MiB); for a Dataset its length and a hash of a
few items (a change to another item is not seen), read under a fixed random state (an
augmenting ``__getitem__`` gives the same items every time it is read here).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from adamtune.tasks.base import Task, is_tensor_pair

WHOLE_BYTES = 1 << 28  # a tensor up to this size is hashed whole (any one row counts) ...
SAMPLE_ROWS = 4096  # ... a larger one by this many rows spread evenly over it
SAMPLE_ITEMS = 5  # items of a Dataset hashed
NAMES = {
    "train_rows": "training rows",
    "validation_rows": "validation rows",
    "data": "data digest",
    "epochs": "epochs",
    "batch_size": "batch size",
    "metric": "metric",
    "direction": "direction",
}


def task_record(task: Task, epochs: int) -> dict[str, Any]:
    """The record of ``task`` trained for ``epochs`` epochs (a training loop: no data to read)."""
    record: dict[str, Any] = {
        "epochs": epochs,
        "metric": task.metric_name,
        "direction": task.direction,
    }
    if task.train_loop is not None:
        return record
    record["batch_size"] = task.batch_size
    try:
        record["train_rows"] = len(task.train[0]) if is_tensor_pair(task.train) else len(task.train)
        record["validation_rows"] = (
            len(task.validation[0]) if is_tensor_pair(task.validation) else len(task.validation)
        )
        digest = hashlib.sha256()
        for split in (task.train, task.validation):
            _digest_split(digest, split)
        record["data"] = digest.hexdigest()[:16]
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001  (a user's Dataset that cannot be read, sys.exit()
        # included: the trials say so, each with its reason)
        record.pop("train_rows", None)
        record.pop("validation_rows", None)
    return record


def changes(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two records, as ``name old -> new`` phrases; a field either lacks
    is not compared (a record from another version, or a loop's)."""
    return [
        f"{NAMES.get(key, key)} {stored[key]!r} -> {now[key]!r}"
        for key in NAMES
        if key in stored and key in now and stored[key] != now[key]
    ]


def _digest_split(digest: Any, split: Any) -> None:
    if is_tensor_pair(split):
        for tensor in split:
            digest.update(f"{tuple(tensor.shape)}|{tensor.dtype}".encode())
            n = len(tensor)
            if tensor.numel() * tensor.element_size() <= WHOLE_BYTES:
                _hash_value(digest, tensor)
            else:
                _hash_value(digest, tensor[torch.linspace(0, n - 1, SAMPLE_ROWS).round().long()])
        return
    n = len(split)
    digest.update(f"dataset|{n}".encode())
    with _fixed_random():
        for index in sorted(
            {round(i * (n - 1) / max(1, SAMPLE_ITEMS - 1)) for i in range(SAMPLE_ITEMS)}
        ):
            _hash_value(digest, split[index])


def _hash_value(digest: Any, value: Any) -> None:
    """Feed ``value`` (a tensor, or a tuple, list or dict of them and plain values) in."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _hash_value(digest, value[key])
    elif isinstance(value, (tuple, list)):
        for item in value:
            _hash_value(digest, item)
    else:
        try:
            import numpy

            if isinstance(value, numpy.ndarray):
                digest.update(value.tobytes())
                return
        except ImportError:  # pragma: no cover  (torch needs numpy here)
            pass
        digest.update(repr(value).encode())


@contextmanager
def _fixed_random() -> Iterator[None]:
    """torch's, Python's and NumPy's random states seeded with 0 inside, restored after."""
    python = random.getstate()
    import numpy

    numpy_state = numpy.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            random.seed(0)
            numpy.random.seed(0)
            yield
    finally:
        random.setstate(python)
        numpy.random.set_state(numpy_state)
