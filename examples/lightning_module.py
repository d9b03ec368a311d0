"""A Lightning module tuned by adamtune, through a small callback and the same ``trial``.

    adamtune search --task examples/lightning_module.py:train --n-trials 10

configure_optimizers takes the optimizer and the per-step schedule from the trial. The
callback logs every step's loss (the divergence guard watches it) and reports each epoch's
validation accuracy to the pruner. A pruned trial's exception passes through Lightning.
"""

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import adamtune

EPOCHS = 5


def loaders(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1200, 10, generator=g)
    y = ((x[:, :5].sum(1) > 0).long() + (x[:, 5:].sum(1) > 0).long()) % 2
    train = DataLoader(
        TensorDataset(x[:1000], y[:1000]),
        batch_size=50,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    return train, DataLoader(TensorDataset(x[1000:], y[1000:]), batch_size=200)


class Classifier(L.LightningModule):
    def __init__(self, trial: adamtune.LoopTrial):
        super().__init__()
        self.trial = trial
        self.net = torch.nn.Sequential(
            torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        accuracy = (self.net(x).argmax(1) == y).float().mean()
        self.log("val_accuracy", accuracy, prog_bar=False)

    def configure_optimizers(self):
        optimizer = self.trial.optimizer(self.parameters())
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.trial.scheduler(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class ReportToAdamtune(L.Callback):
    """Every step's loss to trial.log; every epoch's val_accuracy to trial.report."""

    def __init__(self, trial: adamtune.LoopTrial):
        self.trial = trial

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.trial.log(trainer.global_step - 1, loss=outputs["loss"].item())

    def on_validation_epoch_end(self, trainer, module):
        accuracy = trainer.callback_metrics["val_accuracy"].item()
        self.trial.report(accuracy, step=trainer.current_epoch + 1)


@adamtune.training_loop(metric_name="val_accuracy", direction="maximize", epochs=EPOCHS)
def train(trial: adamtune.LoopTrial) -> dict:
    L.seed_everything(trial.seed, verbose=False)
    train_loader, val_loader = loaders()
    trainer = L.Trainer(
        max_epochs=trial.epochs,  # --epochs, else EPOCHS
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[ReportToAdamtune(trial)],
    )
    trainer.fit(Classifier(trial), train_loader, val_loader)
    return {"val_accuracy": trainer.callback_metrics["val_accuracy"].item()}
