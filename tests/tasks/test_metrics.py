"""adamtune's metrics agree with scikit-learn's on the same arrays, and are computed on the
whole validation split at once (not averaged per batch), which matters for RMSE."""

import math

import pytest
import torch
from sklearn import metrics as sk

import adamtune


@pytest.mark.parametrize("shape", [(40,), (40, 1)])
def test_regression_metrics_match_scikit_learns(shape):
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(40, 1, generator=g, dtype=torch.float64) * 3
    targets = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 1
    y, p = targets.numpy().ravel(), outputs.numpy().ravel()
    assert adamtune.mse(outputs, targets) == pytest.approx(sk.mean_squared_error(y, p), rel=1e-12)
    assert adamtune.rmse(outputs, targets) == pytest.approx(
        math.sqrt(sk.mean_squared_error(y, p)), rel=1e-12
    )
    assert adamtune.mae(outputs, targets) == pytest.approx(sk.mean_absolute_error(y, p), rel=1e-12)
    assert adamtune.mean_squared_error is adamtune.mse


def test_accuracy_matches_scikit_learns():
    g = torch.Generator().manual_seed(1)
    outputs = torch.randn(50, 3, generator=g)
    targets = torch.randint(0, 3, (50,), generator=g)
    assert adamtune.accuracy(outputs, targets) == pytest.approx(
        sk.accuracy_score(targets.numpy(), outputs.argmax(1).numpy())
    )


def test_the_metric_is_computed_on_the_whole_validation_split_at_once():
    from adamtune.tasks import Task
    from adamtune.training.batches import evaluate_split
    from adamtune.training.precision import Precision

    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 2, generator=g)
    y = torch.randn(30, generator=g) * torch.linspace(0.1, 10, 30)  # errors grow along the split
    model = torch.nn.Linear(2, 1)

    def loss(outputs, targets):
        return torch.nn.functional.mse_loss(outputs.squeeze(1), targets)

    task = Task(
        "r",
        lambda: model,
        (x, y),
        (x, y),
        loss,
        adamtune.rmse,
        "val_rmse",
        "minimize",
        epochs=1,
        batch_size=7,
    )
    found = evaluate_split(task, model, (x, y), torch.device("cpu"), Precision("fp32"))
    with torch.no_grad():
        whole = adamtune.rmse(model(x), y)
        per_batch = (
            sum(adamtune.rmse(model(x[i : i + 7]), y[i : i + 7]) for i in range(0, 30, 7)) / 5
        )
    assert found["val_rmse"] == pytest.approx(whole, rel=1e-6)
    assert abs(whole - per_batch) > 1e-3  # the two readings differ here: the test can tell
