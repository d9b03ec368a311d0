# Adam configuration for adamtune, exported by adamtune on 2026-12-04.
# study: 'moons', trial 7: 'accuracy' = 0.91 (maximize)
# task: 'moons', seed: 3, trained for 200 optimizer steps
# Use: optimizer = build_optimizer(model.parameters())
#      scheduler = build_scheduler(optimizer, total_steps)
#      loss.backward(); clip_gradients(model.parameters())  # before optimizer.step()
#      ... optimizer.step(); scheduler.step()  # every step

import torch

from adamtune.builders import build_optimizer as _build_optimizer
from adamtune.builders import build_scheduler as _build_scheduler
from adamtune.config import AdamConfig, ScheduleConfig
from adamtune.optim import FusedAdam

CONFIG = AdamConfig(
    lr=0.003,
    beta1=0.85,
    beta2=0.995,
    eps=1e-08,
    weight_decay=0.01,
    decoupled=True,
    amsgrad=False,
    schedule=ScheduleConfig(
        kind='cosine',
        warmup_fraction=0.1,
        final_lr_fraction=0.0,
        gamma=0.1,
        decays=1,
    ),
    max_grad_norm=1.0,
)


def build_optimizer(params) -> FusedAdam:
    return _build_optimizer(params, CONFIG)


def build_scheduler(optimizer, total_steps: int):
    return _build_scheduler(optimizer, CONFIG, total_steps)


def clip_gradients(params):
    """After loss.backward(), before optimizer.step(): the trial clipped the global
    gradient norm to this."""
    return torch.nn.utils.clip_grad_norm_(params, CONFIG.max_grad_norm)
