"""A hand-written PyTorch training loop, tuned by adamtune as it is.

    adamtune search --task examples/plain_loop.py:train --n-trials 10

adamtune calls train(trial) once per trial. The loop builds its own data, model and batches,
and takes the optimizer and the LR schedule from the trial. It logs its loss at every step,
reports its validation accuracy after every epoch (the pruner may stop it there), and returns
the final metrics.
"""

import torch
from torch.nn import functional as F

import adamtune


def make_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1200, 10, generator=g)
    y = ((x[:, :5].sum(1) > 0).long() + (x[:, 5:].sum(1) > 0).long()) % 2  # XOR of two halves
    return (x[:1000], y[:1000]), (x[1000:], y[1000:])


@adamtune.training_loop(metric_name="val_accuracy", direction="maximize", epochs=8)
def train(trial: adamtune.LoopTrial) -> dict:
    (x, y), (x_val, y_val) = make_data()
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    ).to(trial.device)
    epochs, batch_size = trial.epochs, 50  # --epochs, else the 8 above
    steps = epochs * (len(x) // batch_size)
    optimizer = trial.optimizer(model.parameters())
    scheduler = trial.scheduler(optimizer, total_steps=steps)
    order = torch.Generator().manual_seed(trial.seed)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for index in torch.randperm(len(x), generator=order).split(batch_size):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            trial.log(step, loss=loss.item())
            step += 1
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        trial.report(accuracy, step=epoch)
    return {"val_accuracy": accuracy}
