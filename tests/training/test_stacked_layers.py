"""Per-row layers: each row's dropout noise from its own key, cumulative BatchNorm in tensors."""

import pytest
import torch
from torch import nn

from adamtune.training.stacked.layers import per_row, row_keys, row_noise, uniform


def test_noise_depends_on_the_key_and_the_draw_only():
    with row_noise(torch.tensor(5)):
        first, second = uniform((1000,), torch.device("cpu")), uniform((1000,), torch.device("cpu"))
    with row_noise(torch.tensor(5)):
        again = uniform((1000,), torch.device("cpu"))
    with row_noise(torch.tensor([4, 5, 6])):  # three rows at once, outside vmap
        rows = uniform((3, 1000), torch.device("cpu"))
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert torch.equal(rows[1], first) and not torch.equal(rows[0], first)
    assert float(first.min()) >= 0.0 and float(first.max()) < 1.0
    assert float(torch.cat([first, second]).mean()) == pytest.approx(0.5, abs=0.03)


def test_keys_differ_by_seed_and_by_step():
    keys = row_keys(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))
    assert len(set(keys.tolist())) == 3


@pytest.mark.parametrize(
    "layer, shape", [(nn.Dropout(0.3), (64, 50)), (nn.Dropout2d(0.3), (64, 50, 4, 4))]
)
def test_per_row_dropout_keeps_the_expected_share_and_scales(layer, shape):
    model = per_row(nn.Sequential(layer))
    x = torch.ones(shape)
    with row_noise(torch.tensor(9)):
        out = model(x)
    kept = out != 0
    assert float(kept.float().mean()) == pytest.approx(0.7, abs=0.03)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))
    if isinstance(layer, nn.Dropout2d):  # whole channels
        assert torch.equal(kept, kept[:, :, :1, :1].expand_as(kept))
    model.eval()
    assert torch.equal(model(x), x)


def test_per_row_layers_outside_a_stack_are_refused():
    model = per_row(nn.Sequential(nn.Dropout(0.5)))
    with pytest.raises(RuntimeError, match="outside a stacked step"):
        model(torch.ones(3))


def test_cumulative_batchnorm_matches_torch():
    torch.manual_seed(0)
    theirs = nn.BatchNorm1d(6, momentum=None)
    mine = per_row(theirs)
    for _ in range(3):
        x = torch.randn(16, 6) * 3 + 1
        torch.testing.assert_close(mine(x), theirs(x))
    torch.testing.assert_close(mine.running_mean, theirs.running_mean)
    torch.testing.assert_close(mine.running_var, theirs.running_var)
    assert int(mine.num_batches_tracked) == 3


def test_a_dropout_mlp_draws_the_same_noise_as_batched_products_and_under_vmap():
    from adamtune.tasks import Task, accuracy
    from adamtune.training.stacked.model import StackedModel, task_loss

    def build():
        return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))

    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    task = Task(
        "mlp", build, (x, y), (x, y), nn.functional.cross_entropy, accuracy, "a", "maximize", 1, 8
    )
    torch.manual_seed(0)
    models = [build() for _ in range(3)]
    stack = StackedModel(models[0], models)
    assert stack.layers is not None  # the batched-products path
    keys = torch.tensor([3, 4, 5])
    fast = stack.task_losses(task, (x, y), keys)
    general = stack.losses(task_loss(task), (x, y), keys)
    torch.testing.assert_close(fast, general)
    again = StackedModel(models[1], models[1:2]).task_losses(task, (x, y), keys[1:2])
    torch.testing.assert_close(again, fast[1:2])  # alone in its stack: the same row
