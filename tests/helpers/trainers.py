"""A quiet CPU `Trainer` for tests that fit models on their own batches."""

from __future__ import annotations

import pytorch_lightning as pl


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
