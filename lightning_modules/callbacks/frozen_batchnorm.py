"""BatchNorm layers of the backbone kept in evaluation mode during training (DomainBed 2020).

DomainBed's published tables (Gulrajani & Lopez-Paz, ICLR 2021, arXiv:2007.01434; commit
7df6f06) trained a torchvision ResNet-50 whose BatchNorm layers stay in evaluation mode: every
forward pass, training included, normalises with the running statistics (ImageNet's, from the
pretrained weights), which are never updated; the affine parameters (gamma, beta) are still
trained. Its later versions make this a choice (`freeze_bn`, off by default). This callback does
the same to any model with a `backbone`: Lightning switches the whole model to training mode at
the start of every training epoch and after every validation, so the layers are put back into
evaluation mode before every training batch.

The recalibration modules' own BatchNorm layers (SRM's style integration, Gather-Excite's
gather, MS-SAR) are left in training mode by default: they start from scratch, with no running
statistics worth freezing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
from torch import nn

from lightning_modules.models.blocks import RECALIBRATION_ATTRIBUTE

#: The BatchNorm classes that are frozen (SyncBatchNorm: under DDP with `sync_batchnorm`).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


def backbone_batch_norms(
    backbone: nn.Module, include_recalibration: bool = False
) -> Iterator[nn.Module]:
    """The backbone's BatchNorm layers, without those inside recalibration modules unless
    `include_recalibration`."""
    for name, module in backbone.named_modules():
        if not include_recalibration and RECALIBRATION_ATTRIBUTE in name.split("."):
            continue
        if isinstance(module, BATCH_NORMS):
            yield module


class FreezeBatchNorm(pl.Callback):
    """Keeps the backbone's BatchNorm layers in evaluation mode while training (DomainBed 2020):
    running statistics used, never updated; affine parameters trained."""

    def __init__(self, include_recalibration: bool = False) -> None:
        """Freeze the backbone's BatchNorm layers, and optionally the recalibration modules'.

        Args:
            include_recalibration: freeze the recalibration modules' BatchNorm layers too (they
                start from scratch, so by default they keep normalising with batch statistics).
        """
        self.include_recalibration = include_recalibration

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if backbone is None:
            raise TypeError(
                f"FreezeBatchNorm needs a model with a `backbone`; {type(pl_module).__name__} "
                "has none (remove the callback from trainer.callbacks)"
            )
        for module in backbone_batch_norms(backbone, self.include_recalibration):
            module.eval()
