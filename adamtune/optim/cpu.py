"""Loader for the native CPU kernel (adam_cpu.c): compiled on first use, cached, called by ctypes.

The shared library is built with the system C compiler (``$CC``, else cc/gcc/clang) and cached
under ``$ADAMTUNE_CACHE_DIR`` (default ``~/.cache/adamtune``), keyed by the source, the flags,
the compiler and this CPU's features, so a rebuild happens only when one of them changes.
Writes are atomic: concurrent workers never load a half-written library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("adam_cpu.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # GCC's tuning keeps most loops at 256 bits even where AVX-512 exists; at full width the
    # sqrt and division of an in-cache step (1M parameters) take ~20% less time (measured with
    # benchmarks/optim_step.py; memory-bound sizes are unchanged). Ignored without AVX-512.
    FLAGS.append("-mprefer-vector-width=512")
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
NCOEF = 7
# Below this many elements a step takes microseconds; waking a second thread costs more.
PARALLEL_MIN_ELEMENTS = 1 << 16


class NativeUnavailable(RuntimeError):
    """The native kernel cannot be built or loaded on this machine."""


def cache_dir() -> Path:
    root = os.environ.get("ADAMTUNE_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "adamtune"


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise NativeUnavailable("no C compiler found (set CC, or install gcc)")


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The loaded kernel library, built if needed; raises NativeUnavailable with the reason."""
    compiler = _compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join(FLAGS).encode(),
                compiler.encode(),
                _compiler_version(compiler).encode(),
                _cpu_features().encode(),
            ]
        )
    ).hexdigest()[:16]
    target = cache_dir() / f"adam_cpu-{key}.so"
    if not target.exists():
        _build(compiler, target)
    lib = ctypes.CDLL(str(target))
    fn = lib.adam_step
    ptr, i64p = ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64)
    fn.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int64,
        ptr,
        ptr,
        ptr,
        ptr,
        ptr,
        i64p,
        i64p,
        i64p,
        ctypes.POINTER(ctypes.c_double),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_int,
    ]
    fn.restype = ctypes.c_int
    lib.advance_steps.argtypes = [ctypes.c_int64, ptr, ctypes.POINTER(ctypes.c_double)]
    lib.advance_steps.restype = None
    double_p = ctypes.POINTER(ctypes.c_double)
    lib.adam_coefficients.argtypes = [
        ctypes.c_int64,
        double_p,
        ctypes.c_int64,
        double_p,
        ptr,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
        double_p,
    ]
    lib.adam_coefficients.restype = None
    return lib


def loaded() -> bool:
    """True once library() has loaded the kernel in this process (never builds it)."""
    return library.cache_info().currsize > 0


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return ""


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        cmd = [compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["unknown error"])[0]
            raise NativeUnavailable(f"compiling {SOURCE.name} with {compiler} failed: {first}")
        os.replace(built, target)  # atomic: another process may be loading the same name


def available() -> bool:
    """True when the kernel is built (or can be) and loaded; warns once with the reason if not."""
    try:
        library()
        return True
    except NativeUnavailable as exc:
        _warn_once(str(exc))
        return False


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(
        f"adamtune: native CPU Adam kernel unavailable ({reason}); "
        "falling back to the reference implementation",
        RuntimeWarning,
        stacklevel=3,
    )


def _pointers(tensors: Sequence[torch.Tensor | None]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(
        *(t.data_ptr() if t is not None else 0 for t in tensors)
    )


def _int64s(values: list[int]) -> ctypes.Array:
    return (ctypes.c_int64 * len(values))(*values)


_NO_POINTERS = ctypes.POINTER(ctypes.c_void_p)()  # NULL: the kernel reads vmax only for AMSGrad
_NO_SALTS = ctypes.POINTER(ctypes.c_uint32)()  # NULL: round parameters to nearest


def advance_steps(steps: list[torch.Tensor]) -> list[float]:
    """Add 1 to every step counter, each a float32 scalar on the CPU; return the new counts."""
    values = (ctypes.c_double * len(steps))()
    library().advance_steps(len(steps), _pointers(steps), values)
    return values[:]


_HYPER_DTYPES = {torch.float32: 0, torch.float64: 1}  # codes for adam_coefficients


def reads_hyperparameter(value: float | torch.Tensor) -> bool:
    """True when coefficients() can read ``value`` in place: a float, or a contiguous float32
    or float64 CPU tensor of at most one dimension."""
    if not isinstance(value, torch.Tensor):
        return True
    return (
        value.is_cpu and value.dtype in _HYPER_DTYPES and value.dim() <= 1 and value.is_contiguous()
    )


def coefficients(
    steps: list[float], hypers: list[float | torch.Tensor], n_rows: int, decoupled: bool
) -> torch.Tensor:
    """The coefficient table (reference.COLUMNS) for these step counts, natively: the same
    numbers, to the last bit, as fused_adam's Python floats. ``hypers`` are lr, beta1, beta2,
    eps and weight_decay, each a float or a tensor that reads_hyperparameter accepts; a 1-D
    tensor has one value per row."""
    scalars = (ctypes.c_double * 5)()
    rows = (ctypes.c_void_p * 5)()
    dtypes = (ctypes.c_int * 5)()
    for h, value in enumerate(hypers):
        if isinstance(value, torch.Tensor) and value.dim() == 1:
            rows[h] = value.data_ptr()
            dtypes[h] = _HYPER_DTYPES[value.dtype]
        else:
            scalars[h] = float(value)
    table = torch.empty(len(steps) * n_rows, NCOEF, dtype=torch.float64)
    library().adam_coefficients(
        len(steps),
        (ctypes.c_double * len(steps))(*steps),
        n_rows,
        scalars,
        rows,
        dtypes,
        int(decoupled),
        ctypes.cast(table.data_ptr(), ctypes.POINTER(ctypes.c_double)),
    )
    return table


def step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor | None],
    row_sizes: list[int],
    coef_index: list[int],
    coef: torch.Tensor,
    *,
    amsgrad: bool,
    maximize: bool,
    salts: list[int] | None = None,
) -> None:
    """Update contiguous CPU tensors of one dtype (their state of one dtype, maybe another) in
    place, in one native call; ``salts`` (one per tensor) rounds bf16 parameters stochastically."""
    fn = library().adam_step
    coef = coef.to(dtype=torch.float64).contiguous()
    numels = list(map(torch.Tensor.numel, params))
    threads = torch.get_num_threads() if sum(numels) >= PARALLEL_MIN_ELEMENTS else 1
    dtype, state_dtype = params[0].dtype, exp_avgs[0].dtype
    status = fn(
        DTYPE_CODES[dtype],
        DTYPE_CODES[state_dtype],
        len(params),
        _pointers(params),
        _pointers(grads),
        _pointers(exp_avgs),
        _pointers(exp_avg_sqs),
        _pointers(max_exp_avg_sqs) if amsgrad else _NO_POINTERS,
        _int64s(numels),
        _int64s(row_sizes),
        _int64s(coef_index),
        ctypes.cast(coef.data_ptr(), ctypes.POINTER(ctypes.c_double)),
        int(amsgrad),
        int(maximize),
        (ctypes.c_uint32 * len(salts))(*salts) if salts is not None else _NO_SALTS,
        threads,
    )
    if status != 0:
        rounding = "stochastic" if salts is not None else "nearest"
        raise RuntimeError(
            f"adam_step has no kernel for {dtype} parameters with {state_dtype} state "
            f"rounded to {rounding}"
        )
