"""Render a trial's configuration as code or data for the user's own training script, and
write it safely. Rendering only: which trial to export is adamtune.results.studies' business.

Formats: ``torch`` (a self-contained file, imports only torch and math), ``adamtune``
(FusedAdam and adamtune's schedule), ``hf`` (the torch optimizer and schedule for
``transformers.Trainer(optimizers=...)``, with the TrainingArguments they need), ``lightning`` (a configure_optimizers method), ``yaml`` and ``json``.

Exactness: the torch and lightning schedules are torch LambdaLR schedulers whose multiplier is
adamtune.config.schedules' formula written out with the same operations in the same order, so every
step's learning rate is bit-for-bit the one the trial trained with. Settings equal to torch's
defaults are left out; floats are written with repr(), which round-trips. Anything that comes
from the user (study name, task, metric) appears only inside comments or string literals,
escaped with ascii(), so it cannot inject code.
"""

# Over 400 lines: one short renderer per --format (torch, adamtune, lightning, hf, json,
# yaml) sharing the header and the schedule code; each would be a module of 60 lines.

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adamtune._util.urls import journal_path, redact, sqlite_path
from adamtune.config.adam import SCHEMA_VERSION, AdamConfig, ScheduleConfig
from adamtune.config.settings import FORMATS
from adamtune.errors import ExportError, describe, shown

TORCH_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}


@dataclass(frozen=True)
class ExportedTrial:
    """A trial's configuration with what is needed to say where it came from."""

    study_name: str
    trial_number: int
    value: float
    metric: str
    direction: str
    config: AdamConfig
    total_steps: int | None
    seed: int | None
    task: str | None
    best_step: int | None = None  # early stopping: the step its best weights were taken at
    chosen: str = ""  # why this trial: "the best trial", "the confirmed winner: ..."
    precision: str = "fp32"  # the study's --precision
    values: dict[str, Any] = field(default_factory=dict)  # the user's own (adamtune.config.values)
    record: dict[str, Any] = field(default_factory=dict)  # the study's task_record (epochs, ...)
    transfer_notes: tuple[str, ...] = ()  # what --epochs/--batch-size rescaled, and by which rule
    transfer_steps: int | None = None  # the optimizer steps of the run it was rescaled for


# How a trial of each --precision trained, for the exports' headers (fp32 says nothing).
PRECISION_USE = {
    "bf16": [
        "# The trial trained with --precision bf16: forward pass and loss under",
        "#   with torch.autocast(device_type, dtype=torch.bfloat16): loss = ...",
        "# (weights, gradients and Adam's moments in fp32).",
    ],
    "fp16": [
        "# The trial trained with --precision fp16: forward pass and loss under",
        "#   with torch.autocast(device_type, dtype=torch.float16): loss = ...",
        "# and scaler = torch.amp.GradScaler(device_type): scaler.scale(loss).backward();",
        "# scaler.unscale_(optimizer) before clipping; scaler.step(optimizer); scaler.update().",
    ],
    "bf16-pure": [
        "# The trial trained with --precision bf16-pure: model.to(torch.bfloat16), inputs in",
        "# bf16, loss on outputs.float(), and FusedAdam with state_dtype=torch.float32 and",
        "# stochastic_rounding=True (the adamtune export builds it so; torch's AdamW keeps bf16",
        "# moments and rounds to nearest, which loses updates below half a bf16 step).",
    ],
}


def render(trial: ExportedTrial, fmt: str = "torch") -> str:
    """The export of ``trial`` in format ``fmt`` (one of FORMATS), as text."""
    renderers = {
        "torch": _torch,
        "adamtune": _adamtune,
        "hf": _hf,
        "lightning": _lightning,
        "yaml": _yaml,
        "json": _json,
    }
    if fmt not in renderers:
        raise ExportError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if trial.config.phases and fmt not in ("yaml", "json"):
        from adamtune.results.export_phases import render_phases

        what = {"hf": "transformers' Trainer", "lightning": "a LightningModule"}.get(fmt, fmt)
        text = render_phases(trial.config, fmt, _header(trial, f"Adam schedule for {what}"))
    else:
        text = renderers[fmt](trial)
    if trial.values and fmt not in ("yaml", "json"):
        text += _values_block(trial.values)
    return text


def _values_block(values: dict[str, Any]) -> str:
    """The trial's values of the user's own, as a literal beside the optimizer. Names and
    strings are written with ascii(), so they cannot inject code."""

    lines = [
        "",
        "",
        "# The trial's values of your own (trial.suggest_*, the space's model: section):",
        "# build your model and data with them, as the trial did.",
        "VALUES = {",
        *(
            f"    {ascii(str(name))}: {python_literal(value)},"
            for name, value in values.items()
            if value is None or isinstance(value, (bool, int, float, str))
        ),
        "}",
    ]
    return "\n".join(lines) + "\n"


def python_literal(value: None | bool | int | float | str) -> str:
    """``value`` as Python source that evaluates back to it and can hold no code: strings with
    ascii() (every newline and quote escaped), NaN and infinities as float('...') calls
    (repr() would write the bare names nan and inf, which fail on import)."""
    if isinstance(value, str):
        return ascii(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({ascii(repr(value))})"
    return repr(value)


def comment_text(text: str) -> str:
    """``text`` made safe inside one ``#`` comment line: every newline, carriage return or
    other control character is written as an escape, so the comment cannot end early and let
    the rest of the text run as code."""
    return ascii(text)[1:-1]


# --- shared pieces -------------------------------------------------------------------------


def _header(trial: ExportedTrial, what: str) -> list[str]:
    lines = [
        f"# {what}, exported by adamtune on {datetime.date.today().isoformat()}.",
        f"# study: {ascii(trial.study_name)}, trial {trial.trial_number}: "
        f"{ascii(trial.metric)} = {trial.value!r} ({trial.direction})",
    ]
    if trial.task is not None and trial.best_step is None:
        lines.append(
            f"# task: {ascii(trial.task)}, seed: {trial.seed!r}, "
            f"trained for {trial.total_steps!r} optimizer steps"
        )
    elif trial.task is not None:
        lines.append(
            f"# task: {ascii(trial.task)}, seed: {trial.seed!r}, schedule planned for "
            f"{trial.total_steps!r} optimizer steps; early stopping took the weights after step "
            f"{trial.best_step!r}"
        )
    if trial.chosen.startswith("the confirmed winner"):
        lines.append(f"# {comment_text(trial.chosen)}")
    if trial.transfer_notes:
        lines.append(
            f"# Rescaled for a run of {trial.transfer_steps!r} optimizer steps "
            "(pass that as total_steps):"
        )
        lines += [f"#   {comment_text(note)}" for note in trial.transfer_notes]
    return lines + PRECISION_USE.get(trial.precision, [])


def _torch_optimizer_call(config: AdamConfig, params: str) -> str:
    cls = "torch.optim.AdamW" if config.decoupled else "torch.optim.Adam"
    default_wd = 1e-2 if config.decoupled else 0.0
    args = [params]
    if config.lr != TORCH_DEFAULTS["lr"]:
        args.append(f"lr={config.lr!r}")
    if config.betas != TORCH_DEFAULTS["betas"]:
        args.append(f"betas=({config.beta1!r}, {config.beta2!r})")
    if config.eps != TORCH_DEFAULTS["eps"]:
        args.append(f"eps={config.eps!r}")
    if config.weight_decay != default_wd:
        args.append(f"weight_decay={config.weight_decay!r}")
    if config.amsgrad:
        args.append("amsgrad=True")
    return f"{cls}(\n        " + ",\n        ".join(args) + ",\n    )"


def _multiplier_function(schedule: ScheduleConfig) -> list[str]:
    """adamtune.config.schedules.multiplier for one schedule, as source, in the same float operations."""
    describe = f"{schedule.kind} decay"
    if schedule.warmup_fraction:
        describe = f"linear warmup, then {describe}"
    body = [
        "def lr_multiplier(step: int, total_steps: int) -> float:",
        f'    """LR multiplier at optimizer step `step` (from 0): {describe}."""',
        "    step = min(step, total_steps - 1)  # steps past the end keep the last value",
        f"    warmup = min(total_steps, round({schedule.warmup_fraction!r} * total_steps))",
        "    if step < warmup:",
        "        return (step + 1) / warmup",
        "    progress = (step - warmup) / (total_steps - warmup)",
    ]
    final = repr(schedule.final_lr_fraction)
    tails = {
        "constant": ["    return 1.0"],
        "linear": [f"    return 1.0 - (1.0 - {final}) * progress"],
        "cosine": [
            f"    return {final} + (1.0 - {final}) * (1.0 + math.cos(math.pi * progress)) / 2.0"
        ],
        "exponential": [f"    return float({final} ** progress)"],
        "step": [
            f"    return float({schedule.gamma!r} ** math.floor(progress * "
            f"({schedule.decays!r} + 1)))"
        ],
    }
    return body + tails[schedule.kind]


def _clip_use(config: AdamConfig) -> list[str]:
    """The header's usage line for clipping, when the trial clipped."""
    if config.max_grad_norm is None:
        return []
    return ["#      loss.backward(); clip_gradients(model.parameters())  # before optimizer.step()"]


def _clip_function(limit: str) -> list[str]:
    """clip_gradients(params), as the trial clipped: torch's global-norm clipping."""
    return [
        "",
        "",
        "def clip_gradients(params):",
        '    """After loss.backward(), before optimizer.step(): the trial clipped the global',
        '    gradient norm to this."""',
        f"    return torch.nn.utils.clip_grad_norm_(params, {limit})",
    ]


def _torch_imports(schedule: ScheduleConfig) -> list[str]:
    """torch, and math where the schedule's formula needs it (cos, floor)."""
    return (
        ["import math", "", "import torch"]
        if schedule.kind in ("cosine", "step")
        else ["import torch"]
    )


def _torch_builders(config: AdamConfig) -> list[str]:
    """build_optimizer(params), lr_multiplier and build_scheduler(optimizer, total_steps) with
    torch's own optimizer and LambdaLR: the torch and hf exports' shared core."""
    return [
        "def build_optimizer(params):",
        f"    return {_torch_optimizer_call(config, 'params')}",
        "",
        "",
        *_multiplier_function(config.schedule),
        "",
        "",
        "def build_scheduler(optimizer, total_steps: int):",
        "    return torch.optim.lr_scheduler.LambdaLR(",
        "        optimizer, lambda step: lr_multiplier(step, total_steps)",
        "    )",
    ]


# --- formats ---------------------------------------------------------------------------------


def _torch(trial: ExportedTrial) -> str:
    config = trial.config
    imports = _torch_imports(config.schedule)
    lines = [
        *_header(trial, "Adam configuration for torch"),
        "# Use: optimizer = build_optimizer(model.parameters())",
        "#      scheduler = build_scheduler(optimizer, total_steps)",
        *_clip_use(config),
        "#      ... optimizer.step(); scheduler.step()  # every step",
        "",
        *imports,
        "",
        "",
        *_torch_builders(config),
    ]
    if config.max_grad_norm is not None:
        lines += _clip_function(repr(config.max_grad_norm))
    return "\n".join(lines) + "\n"


def _adamtune(trial: ExportedTrial) -> str:
    c, s = trial.config, trial.config.schedule
    pure = trial.precision == "bf16-pure"
    schedule = (
        f"ScheduleConfig(\n        kind={s.kind!r},\n"
        f"        warmup_fraction={s.warmup_fraction!r},\n"
        f"        final_lr_fraction={s.final_lr_fraction!r},\n"
        f"        gamma={s.gamma!r},\n        decays={s.decays!r},\n    )"
    )
    lines = [
        *_header(trial, "Adam configuration for adamtune"),
        "# Use: optimizer = build_optimizer(model.parameters())",
        "#      scheduler = build_scheduler(optimizer, total_steps)",
        *_clip_use(c),
        "#      ... optimizer.step(); scheduler.step()  # every step",
        "",
        *(["import torch", ""] if c.max_grad_norm is not None or pure else []),
        "from adamtune import AdamConfig, ScheduleConfig",
        "from adamtune import build_optimizer as _build_optimizer",
        "from adamtune import build_scheduler as _build_scheduler",
        "from adamtune.optim import FusedAdam",
        "",
        "CONFIG = AdamConfig(",
        f"    lr={c.lr!r},",
        f"    beta1={c.beta1!r},",
        f"    beta2={c.beta2!r},",
        f"    eps={c.eps!r},",
        f"    weight_decay={c.weight_decay!r},",
        f"    decoupled={c.decoupled!r},",
        f"    amsgrad={c.amsgrad!r},",
        f"    schedule={schedule},",
        *([f"    max_grad_norm={c.max_grad_norm!r},"] if c.max_grad_norm is not None else []),
        ")",
        "",
        "",
        "def build_optimizer(params) -> FusedAdam:",
        *(
            [
                "    optimizer = _build_optimizer(params, CONFIG)",
                "    for group in optimizer.param_groups:  # as the trial's --precision bf16-pure",
                "        group.update(",
                "            state_dtype=torch.float32,",
                "            stochastic_rounding=True,",
                f"            rounding_seed={trial.seed or 0!r},",
                "        )",
                "    return optimizer",
            ]
            if pure
            else ["    return _build_optimizer(params, CONFIG)"]
        ),
        "",
        "",
        "def build_scheduler(optimizer, total_steps: int):",
        "    return _build_scheduler(optimizer, CONFIG, total_steps)",
    ]
    if c.max_grad_norm is not None:
        lines += _clip_function("CONFIG.max_grad_norm")
    return "\n".join(lines) + "\n"


def _hf(trial: ExportedTrial) -> str:
    """The torch export's optimizer and exact schedule, handed to transformers' Trainer through
    ``Trainer(optimizers=(optimizer, scheduler))``: every configuration is expressible, since
    the Trainer then steps them as they are (its own learning_rate, adam_* and
    lr_scheduler_type arguments are not used)."""
    config = trial.config
    clip = repr(config.max_grad_norm or 0.0)
    lines = [
        *_header(trial, "Adam configuration for transformers' Trainer"),
        "# Use: optimizers = build_optimizers(model, total_steps)",
        "#      Trainer(model=model, args=TrainingArguments(output_dir=..., **training_args),",
        "#              optimizers=optimizers, ...)",
        "# total_steps is the Trainer's max_steps: args.max_steps, or num_train_epochs *",
        "# ceil(len(train_dataset) / (per_device_train_batch_size * gradient_accumulation_steps)).",
        "# The Trainer steps this optimizer and this schedule as the trial did, once per optimizer",
        "# step; every parameter decays, as in the trial (the Trainer's own optimizer would",
        "# exempt biases and LayerNorm weights).",
        "",
        *_torch_imports(config.schedule),
        "",
        "training_args = {",
        f"    \"max_grad_norm\": {clip},  # the trial's clipping; 0: none (the Trainer's default is 1)",
        "}",
        "",
        "",
        *_torch_builders(config),
        "",
        "",
        "def build_optimizers(model, total_steps: int):",
        '    """(optimizer, scheduler) for Trainer(optimizers=...)."""',
        "    optimizer = build_optimizer(model.parameters())",
        "    return optimizer, build_scheduler(optimizer, total_steps)",
    ]
    return "\n".join(lines) + "\n"


def _lightning(trial: ExportedTrial) -> str:
    config = trial.config
    imports = _torch_imports(config.schedule)
    lines = [
        *_header(trial, "Adam configuration for a LightningModule"),
        "# Use: paste configure_optimizers into your LightningModule (and lr_multiplier",
        "# beside it); the scheduler steps after every optimizer step.",
        *(
            [
                "# The trial clipped the global gradient norm: Trainer(gradient_clip_val="
                f"{config.max_grad_norm!r}, gradient_clip_algorithm='norm')."
            ]
            if config.max_grad_norm is not None
            else []
        ),
        "",
        *imports,
        "",
        "",
        *_multiplier_function(config.schedule),
        "",
        "",
        "def configure_optimizers(self):",
        f"    optimizer = {_torch_optimizer_call(config, 'self.parameters()')}",
        "    total_steps = int(self.trainer.estimated_stepping_batches)",
        "    scheduler = torch.optim.lr_scheduler.LambdaLR(",
        "        optimizer, lambda step: lr_multiplier(step, total_steps)",
        "    )",
        '    return {"optimizer": optimizer,',
        '            "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}',
    ]
    return "\n".join(lines) + "\n"


def _document(trial: ExportedTrial) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "study": trial.study_name,
        "trial": trial.trial_number,
        "metric": trial.metric,
        "value": trial.value,
        "direction": trial.direction,
        "task": trial.task,
        "seed": trial.seed,
        "total_steps": trial.total_steps,
        **({"best_step": trial.best_step} if trial.best_step is not None else {}),
        **({"precision": trial.precision} if trial.precision != "fp32" else {}),
        "config": trial.config.to_dict(),
        **({"values": dict(trial.values)} if trial.values else {}),
    }


def _yaml(trial: ExportedTrial) -> str:
    import yaml

    header = "\n".join(_header(trial, "Adam configuration (AdamConfig.from_file loads it)"))
    return header + "\n" + yaml.safe_dump(_document(trial), sort_keys=False)


def _json(trial: ExportedTrial) -> str:
    return json.dumps(_document(trial), indent=2) + "\n"


def write_export(
    text: str, path: str, *, force: bool = False, protected: Sequence[str] = ()
) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename).

    Refuses to overwrite an existing file unless ``force``, and never overwrites a study
    storage or an MLflow store (any SQLite database or Optuna journal, or the file of a URL in
    ``protected``), even with ``force``: an export must not cost a user their studies.
    """
    target = Path(path)
    where = f"-o {shown(path)}"
    for url in protected:
        kept = sqlite_path(url) or journal_path(url)
        if kept is not None and os.path.abspath(kept) == os.path.abspath(target):
            raise ExportError(f"{where}: is the store at {redact(url)}; refusing to overwrite it")
    if target.exists() or target.is_symlink():
        if target.is_dir():
            raise ExportError(f"{where}: is a directory")
        if not target.is_file():
            raise ExportError(f"{where}: is not a regular file")
        if _holds_a_store(target):
            raise ExportError(
                f"{where}: holds a SQLite database or an Optuna journal (a study or an MLflow "
                "store); refusing to overwrite it"
            )
        if not force:
            raise ExportError(f"{where}: file exists; pass --force to overwrite it")
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(f"{where}: directory {str(folder)!r} does not exist")
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=folder, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = Path(handle.name)
            # NamedTemporaryFile makes the file 0600; an export is an ordinary file: the mode
            # a plain open() would give it under the user's umask.
            os.chmod(temporary, 0o666 & ~_umask())
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        # A full disk fails the write, the flush or the close: the half-written temporary file
        # goes either way (after a successful rename there is none left).
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ExportError(f"{where}: cannot write: {exc.strerror or describe(exc)}") from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


EXTENSIONS = {"yaml": ".yaml", "json": ".json"}  # every other format is Python source


def export_path(output: str, study_name: str, trial_number: int, fmt: str) -> str:
    """Where ``-o OUTPUT`` writes: OUTPUT itself, or, for a directory (an existing one, or any
    path ending in a slash), a file named after the study and trial inside it."""
    if not (output.endswith(("/", os.sep)) or os.path.isdir(output)):
        return output
    if not os.path.isdir(output):
        raise ExportError(f"-o {shown(output)}: directory does not exist")
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name).strip(".")
    name = f"{stem or 'study'}-trial{trial_number}{EXTENSIONS.get(fmt, '.py')}"
    return os.path.join(output, name)


def _holds_a_store(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return head.startswith(b"SQLite format 3") or head.startswith(b'{"op_code"')
