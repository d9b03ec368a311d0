"""Task files for the stacking benchmarks: the shapes users bring, written as a user would.

adamtune search --task benchmarks/workloads.py:digits_resnet
adamtune search --task benchmarks/workloads.py:digits_mlp_dataset
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from adamtune import Task, accuracy
from adamtune.tasks import resolve_task


class Rows(torch.utils.data.Dataset):
    """(input, target) tensors served one row at a time, as a map-style Dataset."""

    def __init__(self, split: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.x, self.y = split

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def digits_mlp_dataset() -> Task:
    """digits-mlp, its splits served through a Dataset and a DataLoader."""
    task = resolve_task("digits-mlp")
    return dataclasses.replace(
        task,
        name="digits-mlp-dataset",
        train=Rows(task.train),
        validation=Rows(task.validation),
        origin="",
    )


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class DigitsResNet(nn.Module):
    """A small ResNet-style CNN for 8x8 digits: stem, one residual block, dropout, head."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block = ResidualBlock(width)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.stem(x)).mean((2, 3))
        return self.head(self.dropout(h))


def digits_resnet() -> Task:
    """scikit-learn's 8x8 digits as images, a BatchNorm + dropout residual CNN."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return Task(
        name="digits-resnet",
        build_model=DigitsResNet,
        train=(x_tr, y_tr),
        validation=(x_va, y_va),
        loss=F.cross_entropy,
        metric=accuracy,
        metric_name="val_accuracy",
        direction="maximize",
        epochs=6,
        batch_size=64,
        threads=None,
    )
