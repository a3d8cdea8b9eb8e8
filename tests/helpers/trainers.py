"""A quiet CPU `Trainer` for tests that fit models on their own batches, and a fit over a fixed
list of batches that returns each step's loss."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or model summary; `kwargs` are
    the test's own Trainer settings (`max_epochs`, `callbacks`, ...)."""
    settings = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    return pl.Trainer(**{**settings, **kwargs})


class RecordLosses(pl.Callback):
    """Every training step's loss, in order."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_in_order(
    model: pl.LightningModule,
    batches: list,
    epochs: int,
    ckpt_path: str | None = None,
    save_to: Path | None = None,
) -> list[float]:
    """Fit `epochs` epochs over the batches in order (resumed from `ckpt_path` if given), save a
    checkpoint to `save_to` if given; the losses of the steps taken."""
    record = RecordLosses()
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[record])
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return record.losses
