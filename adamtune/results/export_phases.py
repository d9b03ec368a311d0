"""Render a schedule of phases (what a population found, --strategy pbt) as code: the torch,
hf and lightning formats carry ``PHASES`` (each phase's start as a fraction of training, its
peak LR and LR rule, betas, eps, weight decay and clipping) and a ``PhaseScheduler``, a torch
LRScheduler that sets every one of them at every step, by fraction of training, so the schedule
fits a run of any length. The LR rule is adamtune.config.schedules' formula written out with the
same operations in the same order, and phases start at ``round(start * total_steps)`` as
adamtune.config.phases has them: at the recorded length every step's values are exactly the
ones the member's weights trained with. The adamtune format is an AdamConfig with phases, which
``adamtune.train`` and ``adamtune.build_scheduler`` replay. yaml and json need nothing here (the
config's dict holds its phases).
"""

from __future__ import annotations

from adamtune.config.adam import AdamConfig

USE = [
    "# A schedule found by a population (--strategy pbt): Adam's values change as training goes,",
    "# phase by phase, each from a fraction of training on, so it fits a run of any length.",
]


def _phases_literal(config: AdamConfig) -> list[str]:
    phases = [(0.0, config.fixed)] + [(p.start, p.config) for p in config.phases]
    lines = [
        "# From each start (a fraction of training) on: the peak LR and its rule, and Adam's",
        "# other values.",
        "PHASES = [",
    ]
    for start, c in phases:
        s = c.schedule
        lines += [
            "    {",
            f'        "start": {float(start)!r},',
            f'        "lr": {c.lr!r},',
            f'        "betas": ({c.beta1!r}, {c.beta2!r}),',
            f'        "eps": {c.eps!r},',
            f'        "weight_decay": {c.weight_decay!r},',
            f'        "max_grad_norm": {c.max_grad_norm!r},',
            '        "rule": {',
            f'            "kind": "{s.kind}",',  # one of SCHEDULE_KINDS: no user text
            f'            "warmup_fraction": {s.warmup_fraction!r},',
            f'            "final_lr_fraction": {s.final_lr_fraction!r},',
            f'            "gamma": {s.gamma!r},',
            f'            "decays": {s.decays!r},',
            "        },",
            "    },",
        ]
    return [*lines, "]"]


SCHEDULER = '''

def lr_multiplier(rule, step: int, total_steps: int) -> float:
    """The LR rule's multiplier at optimizer step `step` (from 0) of `total_steps`."""
    warmup = min(total_steps, round(rule["warmup_fraction"] * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / (total_steps - warmup)
    final = rule["final_lr_fraction"]
    if rule["kind"] == "constant":
        return 1.0
    if rule["kind"] == "linear":
        return 1.0 - (1.0 - final) * progress
    if rule["kind"] == "cosine":
        return final + (1.0 - final) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if rule["kind"] == "exponential":
        return float(final**progress)
    return float(rule["gamma"] ** math.floor(progress * (rule["decays"] + 1)))


def phase_at(step: int, total_steps: int):
    """The phase in force at `step`: the last to start at or before it."""
    current = PHASES[0]
    for phase in PHASES[1:]:
        if min(total_steps, round(phase["start"] * total_steps)) <= step:
            current = phase
    return current


class PhaseScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Sets the LR, betas, eps and weight decay of every param group at every step; call
    step() after every optimizer.step(). Steps past the end keep the last values."""

    def __init__(self, optimizer, total_steps: int):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        self.total_steps = total_steps
        self.max_grad_norm = PHASES[0]["max_grad_norm"]  # the clipping of the phase in force
        super().__init__(optimizer)

    def get_lr(self):
        step = min(self.last_epoch, self.total_steps - 1)
        phase = phase_at(step, self.total_steps)
        self.max_grad_norm = phase["max_grad_norm"]
        for group in self.optimizer.param_groups:
            group["betas"] = phase["betas"]
            group["eps"] = phase["eps"]
            group["weight_decay"] = phase["weight_decay"]
        lr = phase["lr"] * lr_multiplier(phase["rule"], step, self.total_steps)
        return [lr for _ in self.optimizer.param_groups]
'''

CLIP = '''

def clip_gradients(params, scheduler):
    """After loss.backward(), before optimizer.step(): the phase in force clips the global
    gradient norm (where it does)."""
    if scheduler.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, scheduler.max_grad_norm)
'''


def _clips(config: AdamConfig) -> bool:
    return any(c.max_grad_norm is not None for c in [config, *(p.config for p in config.phases)])


def _optimizer_call(config: AdamConfig, params: str) -> str:
    c = config.fixed
    cls = "torch.optim.AdamW" if c.decoupled else "torch.optim.Adam"
    args = [
        params,
        'lr=PHASES[0]["lr"]',
        'betas=PHASES[0]["betas"]',
        'eps=PHASES[0]["eps"]',
        'weight_decay=PHASES[0]["weight_decay"]',
    ]
    if c.amsgrad:
        args.append("amsgrad=True")
    return f"{cls}(\n        " + ",\n        ".join(args) + ",\n    )"


def _core(config: AdamConfig) -> list[str]:
    lines = [
        "import math",
        "",
        "import torch",
        "",
        *_phases_literal(config),
        *SCHEDULER.splitlines(),
        "",
        "",
        "def build_optimizer(params):",
        f"    return {_optimizer_call(config, 'params')}",
        "",
        "",
        "def build_scheduler(optimizer, total_steps: int):",
        "    return PhaseScheduler(optimizer, total_steps)",
    ]
    if _clips(config):
        lines += CLIP.splitlines()
    return lines


def _use(config: AdamConfig) -> list[str]:
    clip = ["#      loss.backward(); clip_gradients(model.parameters(), scheduler)"]
    return [
        "# Use: optimizer = build_optimizer(model.parameters())",
        "#      scheduler = build_scheduler(optimizer, total_steps)",
        *(clip if _clips(config) else []),
        "#      ... optimizer.step(); scheduler.step()  # every step",
    ]


def render_phases(config: AdamConfig, fmt: str, header: list[str]) -> str:
    """The export of a configuration with phases, in ``fmt`` (torch, adamtune, hf or
    lightning), below ``header``."""
    if fmt == "adamtune":
        return _adamtune(config, header)
    if fmt == "torch":
        lines = [*header, *USE, *_use(config), "", *_core(config)]
    elif fmt == "hf":
        lines = [*header, *USE, *_hf(config)]
    else:
        lines = [*header, *USE, *_lightning(config)]
    return "\n".join(lines) + "\n"


def _hf(config: AdamConfig) -> list[str]:
    clips = sorted({repr(c.max_grad_norm) for c in [config, *(p.config for p in config.phases)]})
    note = (
        []
        if len(clips) == 1
        else [
            f"# The phases clip at {', '.join(clips)}; the Trainer clips at one value: the first's.",
        ]
    )
    return [
        "# Use: optimizers = build_optimizers(model, total_steps)",
        "#      Trainer(model=model, args=TrainingArguments(output_dir=..., **training_args),",
        "#              optimizers=optimizers, ...)",
        "# total_steps is the Trainer's max_steps. The Trainer steps this optimizer and this",
        "# schedule once per optimizer step; every parameter decays, as in the trial.",
        *note,
        "",
        *_core(config),
        "",
        "",
        "training_args = {",
        f'    "max_grad_norm": {config.max_grad_norm or 0.0!r},  # 0: none (the Trainer\'s default is 1)',
        "}",
        "",
        "",
        "def build_optimizers(model, total_steps: int):",
        '    """(optimizer, scheduler) for Trainer(optimizers=...)."""',
        "    optimizer = build_optimizer(model.parameters())",
        "    return optimizer, build_scheduler(optimizer, total_steps)",
    ]


def _lightning(config: AdamConfig) -> list[str]:
    return [
        "# Use: paste configure_optimizers into your LightningModule (PHASES, lr_multiplier,",
        "# phase_at and PhaseScheduler beside it); the scheduler steps after every optimizer step.",
        *(
            ["# Clipping changes by phase: call clip_gradients in on_before_optimizer_step."]
            if _clips(config)
            else []
        ),
        "",
        *_core(config),
        "",
        "",
        "def configure_optimizers(self):",
        "    optimizer = build_optimizer(self.parameters())",
        "    total_steps = int(self.trainer.estimated_stepping_batches)",
        "    scheduler = PhaseScheduler(optimizer, total_steps)",
        '    return {"optimizer": optimizer,',
        '            "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}',
    ]


def _adamtune(config: AdamConfig, header: list[str]) -> str:
    from pprint import pformat

    data = pformat(config.to_dict(), width=92, sort_dicts=False)  # a Python literal
    lines = [
        *header,
        *USE,
        *_use(config),
        "# or replay it whole: adamtune.train(task, CONFIG)",
        "",
        *(["import torch", ""] if _clips(config) else []),
        "from adamtune import AdamConfig",
        "from adamtune import build_optimizer as _build_optimizer",
        "from adamtune import build_scheduler as _build_scheduler",
        "",
        "CONFIG = AdamConfig.from_dict(",
        *(f"    {line}" for line in data.splitlines()),
        ")",
        "",
        "",
        "def build_optimizer(params):",
        "    return _build_optimizer(params, CONFIG)",
        "",
        "",
        "def build_scheduler(optimizer, total_steps: int):",
        "    return _build_scheduler(optimizer, CONFIG, total_steps)",
    ]
    if _clips(config):
        lines += CLIP.splitlines()
    return "\n".join(lines) + "\n"
