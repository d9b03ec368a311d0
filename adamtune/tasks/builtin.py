"""Built-in workloads, all generated or shipped offline (scikit-learn's bundled sets, MNIST-1D).

Each factory returns a Task with a fixed, seeded train/validation split, so every trial of a
study scores on the same data. Features (and regression targets) are standardised with
statistics of the training split only. Each trains on one thread: the MLPs gain nothing from
a second, and a search leaves it to the MLflow logging process (figures, and the CNN's
exception: benchmarks/results/threads_cpu.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from adamtune.tasks.base import Task, accuracy, mean_squared_error

SPLIT_SEED = 0
THREADS = 1


def mlp(n_in: int, n_out: int, hidden: tuple[int, ...] = (128, 128)) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [torch.tensor((a - mean) / std, dtype=torch.float32) for a in (train, *others)]


def _sklearn_split(x: np.ndarray, y: np.ndarray, stratify: bool, val_fraction: float = 0.2):
    from sklearn.model_selection import train_test_split

    return train_test_split(
        x, y, test_size=val_fraction, random_state=SPLIT_SEED, stratify=y if stratify else None
    )


def _classification(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    hidden: tuple[int, ...],
    description: str,
) -> Task:
    x_tr, x_va, y_tr, y_va = _sklearn_split(x, y, stratify=True)
    x_tr_t, x_va_t = _standardise(x_tr, x_va)
    n_in, n_out = x.shape[1], int(y.max()) + 1
    return Task(
        name=name,
        build_model=lambda: mlp(n_in, n_out, hidden),
        train=(x_tr_t, torch.tensor(y_tr, dtype=torch.long)),
        validation=(x_va_t, torch.tensor(y_va, dtype=torch.long)),
        loss=F.cross_entropy,
        metric=accuracy,
        metric_name="val_accuracy",
        direction="maximize",
        epochs=epochs,
        batch_size=batch_size,
        threads=THREADS,
        description=description,
    )


def digits_mlp() -> Task:
    from sklearn.datasets import load_digits

    data = load_digits()
    return _classification(
        "digits-mlp",
        data.data,
        data.target,
        epochs=20,
        batch_size=64,
        hidden=(128, 128),
        description="8x8 handwritten digits (1797, 10 classes), MLP 64-128-128-10; accuracy",
    )


def wine_mlp() -> Task:
    from sklearn.datasets import load_wine

    data = load_wine()
    return _classification(
        "wine-mlp",
        data.data,
        data.target,
        epochs=40,
        batch_size=16,
        hidden=(64,),
        description="wine cultivars (178, 3 classes), MLP 13-64-3; accuracy",
    )


def breast_cancer_mlp() -> Task:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return _classification(
        "breast-cancer-mlp",
        data.data,
        data.target,
        epochs=30,
        batch_size=32,
        hidden=(64,),
        description="breast cancer diagnosis (569, 2 classes), MLP 30-64-2; accuracy",
    )


def diabetes_mlp() -> Task:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x_tr, x_va, y_tr, y_va = _sklearn_split(data.data, data.target, stratify=False)
    x_tr_t, x_va_t = _standardise(x_tr, x_va)
    y_tr_t, y_va_t = _standardise(y_tr[:, None], y_va[:, None])
    return Task(
        name="diabetes-mlp",
        build_model=lambda: mlp(x_tr.shape[1], 1, (64, 64)),
        train=(x_tr_t, y_tr_t),
        validation=(x_va_t, y_va_t),
        loss=F.mse_loss,
        metric=mean_squared_error,
        metric_name="val_mse",
        direction="minimize",
        epochs=40,
        batch_size=32,
        threads=THREADS,
        description="diabetes progression regression (442, 10 features), MLP 10-64-64-1; "
        "MSE on the standardised target",
    )


class _Conv1d(nn.Module):
    """A small 1-D CNN for MNIST-1D (input: [batch, 40])."""

    def __init__(self, length: int, n_out: int, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(channels * (length // 4), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


MNIST1D_SEED = 42  # mnist1d's own default, pinned so the data never changes under us
MNIST1D_FILE = "mnist1d_seed42.npz"  # mnist1d.make_dataset's output for that seed, shipped


def mnist1d_arrays() -> dict[str, np.ndarray]:
    """MNIST-1D as the ``mnist1d`` package generates it with seed 42: ``x``, ``y``, ``x_test``,
    ``y_test``, and the fixed split of ``x`` (``train_index``, ``val_index``: what
    ``_sklearn_split`` gives, stratified, seed 0). Read from the copy shipped with adamtune
    (8 ms), since importing and running the generator takes about 6 s per process and
    importing scikit-learn for the split 2.7 s; tests/tasks/test_tasks.py checks the copy against
    the generator and the split against scikit-learn's."""
    from importlib import resources

    with resources.files("adamtune.tasks").joinpath(MNIST1D_FILE).open("rb") as f:
        shipped = np.load(f)
        return {key: shipped[key] for key in shipped.files}


def generate_mnist1d() -> dict[str, np.ndarray]:
    """The same arrays, generated afresh by the ``mnist1d`` package."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = MNIST1D_SEED
    data = make_dataset(args)
    return {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


def _mnist1d(name: str, model: str) -> Task:
    data = mnist1d_arrays()
    x, y = np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"])
    train, val = data["train_index"], data["val_index"]  # _sklearn_split's, shipped
    x_tr, x_va, y_tr, y_va = x[train], x[val], y[train], y[val]
    x_tr_t, x_va_t, x_te_t = _standardise(x_tr, x_va, np.asarray(data["x_test"]))
    length = x.shape[1]
    builders = {"mlp": lambda: mlp(length, 10, (100, 100)), "cnn": lambda: _Conv1d(length, 10)}
    return Task(
        name=name,
        build_model=builders[model],
        train=(x_tr_t, torch.tensor(y_tr, dtype=torch.long)),
        validation=(x_va_t, torch.tensor(y_va, dtype=torch.long)),
        test=(x_te_t, torch.tensor(np.asarray(data["y_test"]), dtype=torch.long)),
        loss=F.cross_entropy,
        metric=accuracy,
        metric_name="val_accuracy",
        direction="maximize",
        epochs=20 if model == "mlp" else 15,
        batch_size=100,
        threads=THREADS,
        description=f"MNIST-1D (4000 train incl. 800 validation, 1000 test; generated offline), "
        f"{'MLP 40-100-100-10' if model == 'mlp' else '3-layer 1-D CNN'}; accuracy",
    )


def mnist1d_mlp() -> Task:
    return _mnist1d("mnist1d-mlp", "mlp")


def mnist1d_cnn() -> Task:
    return _mnist1d("mnist1d-cnn", "cnn")


def charlm_transformer() -> Task:
    from adamtune.tasks.charlm import charlm_transformer as build

    return build()


BUILTIN = {
    "digits-mlp": digits_mlp,
    "wine-mlp": wine_mlp,
    "breast-cancer-mlp": breast_cancer_mlp,
    "diabetes-mlp": diabetes_mlp,
    "mnist1d-mlp": mnist1d_mlp,
    "mnist1d-cnn": mnist1d_cnn,
    "charlm-transformer": charlm_transformer,
}
