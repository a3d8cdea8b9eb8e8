"""`MultiDomainClassifier`: a recalibrated backbone shared by all domains, one head per domain."""

from __future__ import annotations

from collections.abc import Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from lightning_modules.backbones import create_backbone
from lightning_modules.heads import MultiDomainHead
from lightning_modules.metrics import (
    DomainAccuracy,
    accuracy_from_confusion,
    metric_safe_name,
    summarize_domains,
)


def sgd_recipe(params: Iterable) -> torch.optim.Optimizer:
    """The SRM paper's optimizer: SGD, lr 0.1 (batch 256), momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


class MultiDomainClassifier(pl.LightningModule):
    """Shared recalibrated backbone + `MultiDomainHead`; each sample's loss through its own head.

    Metrics (names with `/`; domain names pass through `metric_safe_name`): `train/loss`,
    `train/acc`, `val/loss`, `val/acc/<domain>`, `val/acc_mean` and `val/acc_worst` over the
    trained domains (the model-selection criterion: held-out domains never select a model),
    `val/acc_held_out_mean` when domains are held out, and the same under `test/`. Confusion
    matrices of the last validation and test pass are kept in `evaluation_results`.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        recalibration: str = "srm",
        weights: str | None = None,
        num_classes: int = 65,
        domain_names: list[str] | None = None,
        head_domains: list[str] | None = None,
        class_names: list[str] | None = None,
        image_size: int = 224,
        shared_head: bool = False,
        optimizer: OptimizerCallable = sgd_recipe,
        lr_scheduler: LRSchedulerCallable | None = None,
        recalibration_weight_decay: bool = False,
        backbone_lr_multiplier: float = 1.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        """Args:
        backbone: registered backbone name (resnet18/34/50/101, CIFAR-style resnet20/32/56/110).
        recalibration: module in every residual block: none, se, srm, ge_minus, ge, ge_plus,
            mssar.
        weights: torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT) from
            torchvision's cache, a local state-dict file, or null for random initialisation.
        num_classes: classes shared by all domains (linked from the DataModule by the CLI).
        domain_names: every domain of the data, in order (linked from the DataModule).
        head_domains: the domains with a classifier head (linked: the trained domains).
        class_names: class names, for reports (linked from the DataModule).
        image_size: training resolution (linked; global-extent Gather-Excite depends on it).
        shared_head: add a head shared by all domains; it also classifies unseen domains.
        optimizer: optimizer class_path/init_args (default: SGD 0.1, momentum 0.9, wd 1e-4).
        lr_scheduler: LR scheduler class_path/init_args, stepped every epoch (default: none).
        recalibration_weight_decay: apply weight decay to the parameters the SRM recipe
            exempts (CFC weights and the module's BN); false follows the recipe.
        backbone_lr_multiplier: the backbone's learning rate relative to the heads' (e.g. 0.1
            when fine-tuning pretrained weights).
        label_smoothing: cross-entropy label smoothing.
        channels_last: run the backbone in channels-last memory format (faster on GPUs with
            tensor cores).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], logger=False)
        if backbone_lr_multiplier <= 0:
            raise ValueError(f"model.backbone_lr_multiplier={backbone_lr_multiplier} must be > 0")
        self.domain_names = list(domain_names or ["default"])
        self.head_domains = list(head_domains or self.domain_names)
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.backbone = create_backbone(
            backbone, recalibration=recalibration, weights=weights, image_size=image_size
        )
        self.head = MultiDomainHead(
            self.backbone.feature_dim,
            num_classes,
            self.domain_names,
            head_domains=self.head_domains,
            shared_head=shared_head,
        )
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.train_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.domain_accuracy = torch.nn.ModuleDict(
            {stage: DomainAccuracy(self.domain_names, num_classes) for stage in ("val", "test")}
        )
        self.evaluation_results: dict[str, dict[str, torch.Tensor]] = {}

    # ----- forward ------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, *rest = batch
        if images.dtype == torch.uint8:
            # Normalised once per batch on the device, not per image in the workers.
            images = normalize_batch(images, IMAGENET_MEAN, IMAGENET_STD)
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return (images, *rest)

    def forward(self, images: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images), domain_index)

    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels, domain_index = batch
        features = self.backbone(images)
        logits = self.head(features, domain_index)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        if self.head.shared is not None and self.training:
            loss = loss + F.cross_entropy(
                self.head.shared(features), labels, label_smoothing=self.hparams.label_smoothing
            )
        return loss, logits, labels, domain_index

    # ----- stages -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, labels, _ = self._step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); lower the learning rate or "
                "check the data. The last checkpoint written before this step is kept."
            )
        self.train_accuracy(logits.argmax(dim=1), labels)
        batch_size = len(labels)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size
        )
        self.log("train/acc", self.train_accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _evaluation_step(self, batch, stage: str) -> None:
        loss, logits, labels, domain_index = self._step(batch)
        self.domain_accuracy[stage].update(logits.argmax(dim=1), labels, domain_index)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def _evaluation_epoch_end(self, stage: str) -> None:
        matrices = self.domain_accuracy[stage].confusion_matrices()
        self.domain_accuracy[stage].reset()
        accuracies = {name: accuracy_from_confusion(m).item() for name, m in matrices.items()}
        metrics = {f"{stage}/acc/{metric_safe_name(n)}": v for n, v in accuracies.items()}
        for key, value in summarize_domains(accuracies, self.head_domains).items():
            metrics[f"{stage}/{key}"] = value
        # Values are already synced across processes by torchmetrics; the mean goes to the bar.
        mean_key = f"{stage}/acc_mean"
        if mean_key in metrics:
            self.log(mean_key, metrics.pop(mean_key), prog_bar=True)
        self.log_dict(metrics)
        self.evaluation_results[stage] = {name: m.cpu() for name, m in matrices.items()}

    def on_validation_epoch_end(self) -> None:
        self._evaluation_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._evaluation_epoch_end("test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels, domain_index = batch
        probabilities = self(images, domain_index).softmax(dim=1)
        return {
            "probabilities": probabilities,
            "prediction": probabilities.argmax(dim=1),
            "label": labels,
            "domain_index": domain_index,
        }

    # ----- optimisation -------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Backbone (decayed / exempt) and heads, each with its learning-rate multiplier."""
        exempt = (
            set() if self.hparams.recalibration_weight_decay else self.backbone.no_weight_decay()
        )
        decayed, not_decayed = [], []
        for name, parameter in self.backbone.named_parameters():
            (not_decayed if name in exempt else decayed).append(parameter)
        multiplier = self.hparams.backbone_lr_multiplier
        groups = [
            {"name": "backbone", "params": decayed, "lr_multiplier": multiplier},
            {
                "name": "backbone_no_weight_decay",
                "params": not_decayed,
                "weight_decay": 0.0,
                "lr_multiplier": multiplier,
            },
            {"name": "heads", "params": list(self.head.parameters()), "lr_multiplier": 1.0},
        ]
        return [group for group in groups if group["params"]]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group["lr_multiplier"]
            if group["lr"] <= 0:
                raise ValueError(
                    f"learning rate of parameter group {group['name']!r} is {group['lr']}; "
                    "model.optimizer.init_args.lr (and backbone_lr_multiplier) must be positive"
                )
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}
