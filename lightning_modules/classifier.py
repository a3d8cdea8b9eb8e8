"""`MultiDomainClassifier`: a recalibrated backbone shared by all domains, one head per domain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.metrics import (
    DomainAccuracy,
    accuracy_from_confusion,
    summarize_domains,
)
from lightning_modules.models.adaptation import (
    ADAPTATION_METHODS,
    DomainDiscriminator,
    dann_loss,
    dann_schedule,
)
from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.heads import MultiDomainHead
from lightning_modules.models.recalibration import format_module_options
from lightning_modules.names import metric_safe_name
from lightning_modules.optimization import CosineAnnealingToMaxEpochs, sgd_recipe
from lightning_modules.style_robustness import STYLE_SHIFTED_DATALOADER, StyleRobustness


class MultiDomainClassifier(pl.LightningModule):
    """Shared recalibrated backbone + `MultiDomainHead`; each sample's loss through its own head.

    Metrics (names with `/`; domain names pass through `metric_safe_name`): `train/loss`,
    `train/acc`, `val/loss`, `val/acc/<domain>`, `val/acc_mean` and `val/acc_worst` over the
    trained domains (the model-selection criterion: held-out domains never select a model),
    `val/acc_held_out_mean` when domains are held out, and the same under `test/`. Confusion
    matrices of the last validation and test pass are kept in `evaluation_results`. With the
    DataModule's `style_shift`, a second evaluation loader (index 1) holds the style-shifted
    images: `val/style_acc/<domain>`, `val/style_acc_mean`, `val/style_robustness` and the
    cross-domain heat map (see `lightning_modules/style_robustness.py`).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        recalibration: str = "srm",
        recalibration_kwargs: dict[str, Any] | None = None,
        weights: str | None = None,
        num_classes: int = 65,
        domain_names: list[str] | None = None,
        trained_domains: list[str] | None = None,
        class_names: list[str] | None = None,
        image_size: int = 224,
        shared_head: bool = False,
        optimizer: OptimizerCallable = sgd_recipe,
        lr_scheduler: LRSchedulerCallable | None = None,
        recalibration_weight_decay: bool = False,
        backbone_lr_multiplier: float = 1.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        init_from_checkpoint: str | None = None,
        new_head_init: str = "mean",
        adaptation: str | None = None,
        adaptation_weight: float = 1.0,
        discriminator_hidden_features: int = 1024,
    ) -> None:
        """Args:
        backbone: registered backbone name (resnet18/34/50/101, CIFAR-style resnet20/32/56/110).
        recalibration: module in every residual block: none, se, srm, ge_minus, ge, ge_plus,
            mssar.
        recalibration_kwargs: the module's options, passed to its constructor in every block,
            e.g. `{fused: false}` (SRM's reference formula), `{pooling: avg}`,
            `{reduction: 8}` (SE), `{extent: 8}` (Gather-Excite), `{scales: [1, 2]}` (MS-SAR),
            `{gate_init: 0.1}`. A key the module lacks fails when the model is built, with the
            module's valid options.
        weights: torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT) from
            torchvision's cache, a local state-dict file, or null for random initialisation.
        num_classes: classes shared by all domains (linked from the DataModule by the CLI).
        domain_names: every domain of the data, in order (linked from the DataModule).
        trained_domains: the domains with a classifier head (linked: the trained domains).
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
        compile: compile the backbone with `torch.compile` (in place, so checkpoint keys are
            unchanged); pays off on GPUs for long runs.
        init_from_checkpoint: grow a trained model: a Lightning checkpoint whose backbone and
            heads are loaded unchanged; domains it has no head for (new domains) get one per
            `new_head_init`. Training starts afresh (epoch 0, new optimizer); to continue an
            interrupted run use `fit --ckpt_path` instead.
        new_head_init: how the heads of new domains start: `mean` (the mean of the
            checkpoint's heads, i.e. the unseen-domain prediction as a starting point) or
            `fresh` (random, like any new head).
        adaptation: unsupervised domain adaptation to the DataModule's `target_domains`: null
            (targets are only evaluated) or `dann` (gradient reversal and a domain
            discriminator on the backbone features, Ganin et al. 2016).
        adaptation_weight: scale of the reversed gradient; it is multiplied by Ganin et al.'s
            schedule 2 / (1 + exp(-10 p)) - 1 over training progress p.
        discriminator_hidden_features: width of the domain discriminator's hidden layers.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], logger=False)
        if backbone_lr_multiplier <= 0:
            raise ValueError(f"model.backbone_lr_multiplier={backbone_lr_multiplier} must be > 0")
        self.domain_names = list(domain_names or ["default"])
        self.trained_domains = list(trained_domains or self.domain_names)
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.backbone = create_backbone(
            backbone,
            recalibration=recalibration,
            weights=weights,
            image_size=image_size,
            recalibration_kwargs=recalibration_kwargs,
        )
        #: The options that make this a module variant, `key=value,...` ('' for the defaults).
        self.module_options = format_module_options(recalibration, recalibration_kwargs)
        self.head = MultiDomainHead(
            self.backbone.feature_dim,
            num_classes,
            self.domain_names,
            trained_domains=self.trained_domains,
            shared_head=shared_head,
        )
        if new_head_init not in ("mean", "fresh"):
            raise ValueError(f"model.new_head_init={new_head_init!r}; valid choices: mean, fresh")
        if adaptation is not None and adaptation not in ADAPTATION_METHODS:
            raise ValueError(
                f"model.adaptation={adaptation!r}; valid choices: null, "
                + ", ".join(ADAPTATION_METHODS)
            )
        self.discriminator = (
            DomainDiscriminator(self.backbone.feature_dim, discriminator_hidden_features)
            if adaptation == "dann"
            else None
        )
        # Heads created for domains the checkpoint lacks (set by _init_from_checkpoint).
        self.grown_heads: list[str] = []
        if init_from_checkpoint:
            # Before channels_last/compile, which must see the loaded weights.
            self._init_from_checkpoint(init_from_checkpoint, new_head_init)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()
        self.train_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.domain_accuracy = torch.nn.ModuleDict(
            {stage: DomainAccuracy(self.domain_names, num_classes) for stage in ("val", "test")}
        )
        # Fed only when the DataModule adds the style-shifted loader (data.style_shift).
        self.style_robustness = StyleRobustness(
            self.domain_names, self.trained_domains, num_classes
        )
        self.evaluation_results: dict[str, dict[str, torch.Tensor]] = {}

    @classmethod
    def load_trained(cls, ckpt_path: str) -> MultiDomainClassifier:
        """A trained classifier from a Lightning checkpoint, on the CPU, for evaluation tools.

        Its state dict replaces pretrained weights and any parent checkpoint, so neither is
        read (`weights`, `init_from_checkpoint` are cleared), and it is not compiled; the file is
        loaded with `weights_only=True`, so it cannot run code.
        """
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
        return cls.load_from_checkpoint(
            ckpt_path,
            map_location="cpu",
            weights_only=True,
            weights=None,
            init_from_checkpoint=None,
            compile=False,
        )

    # ----- forward ------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of a batch of normalised images (the DataModule normalises them in
        its `on_after_batch_transfer`)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def forward(self, images: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images), domain_index)

    def _step(self, batch, features: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(loss, logits, labels, domain_index, features) of a batch (`features`: the batch's
        backbone features when already computed)."""
        images, labels, domain_index = batch
        if features is None:
            features = self.features(images)
        logits = self.head(features, domain_index)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        if self.head.shared is not None and self.training:
            loss = loss + F.cross_entropy(
                self.head.shared(features), labels, label_smoothing=self.hparams.label_smoothing
            )
        return loss, logits, labels, domain_index, features

    # ----- stages -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        target = None
        if isinstance(batch, dict):  # CombinedLoader: labelled source + unlabelled target
            batch, target = batch["source"], batch["target"]
        if batch is None:  # every sample skipped: returning None skips the optimizer step
            return None
        loss, logits, labels = self._training_loss(batch, target)
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

    def _training_loss(self, batch, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, labels) of the labelled batch; with `adaptation: dann` and a target
        batch, plus the domain loss. Only the target images are used: their labels (all
        `UNLABELLED`) never reach a loss."""
        if self.discriminator is None or target is None:
            loss, logits, labels, *_ = self._step(batch)
            return loss, logits, labels
        source_images, target_images = batch[0], target[0]
        # One backbone pass over both, as in the paper: BatchNorm sees source and target alike.
        features = self.features(torch.cat([source_images, target_images]))
        source_features, target_features = features.split([len(source_images), len(target_images)])
        loss, logits, labels, *_ = self._step(batch, features=source_features)
        weight = self.hparams.adaptation_weight * dann_schedule(self._training_progress())
        domain_loss, domain_accuracy = dann_loss(
            self.discriminator, source_features, target_features, weight
        )
        size = len(features)
        self.log("train/domain_loss", domain_loss, on_step=True, on_epoch=True, batch_size=size)
        self.log("train/domain_acc", domain_accuracy, on_epoch=True, batch_size=size)
        self.log("train/adaptation_weight", weight, on_step=True, on_epoch=False)
        return loss + domain_loss, logits, labels

    def _training_progress(self) -> float:
        """Fraction of the optimizer steps done, for the adaptation schedule (1 off-trainer)."""
        trainer = self._trainer
        if trainer is None:
            return 1.0
        total = trainer.estimated_stepping_batches
        return self.global_step / total if 0 < total < float("inf") else 1.0

    def _init_from_checkpoint(self, path: str, new_head_init: str) -> None:
        """Copy the checkpoint's backbone and heads unchanged; heads it lacks start as the mean
        of its heads (`new_head_init: mean`) or stay freshly initialised."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"model.init_from_checkpoint: {path} does not exist")
        # weights_only: a checkpoint from elsewhere cannot run code when loaded.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint.get("state_dict", checkpoint)
        own = self.state_dict()
        missing = sorted(k for k in own if k.startswith("backbone.") and k not in state)
        if missing:
            raise ValueError(
                f"model.init_from_checkpoint: {path} lacks backbone weights {missing[:5]} "
                f"({len(missing)} in all); use the checkpoint's backbone and recalibration"
            )
        loaded = {}
        for key, value in state.items():
            if key.startswith(("backbone.", "head.", "discriminator.")) and key in own:
                if value.shape != own[key].shape:
                    raise ValueError(
                        f"model.init_from_checkpoint: {key} has shape {tuple(value.shape)} in "
                        f"{path} but {tuple(own[key].shape)} here (different num_classes?)"
                    )
                loaded[key] = value
        old_heads = sorted({key.split(".")[2] for key in state if key.startswith("head.heads.")})
        self.grown_heads = [name for name in self.head.heads if name not in old_heads]
        if new_head_init == "mean" and old_heads:
            for name in self.grown_heads:
                for parameter in ("weight", "bias"):
                    stacked = torch.stack([state[f"head.heads.{o}.{parameter}"] for o in old_heads])
                    loaded[f"head.heads.{name}.{parameter}"] = stacked.mean(dim=0)
        own.update(loaded)
        self.load_state_dict(own)
        rank_zero_info(
            f"Loaded backbone and heads {old_heads} from {path}; new heads "
            f"{self.grown_heads} ({new_head_init})"
        )

    def _evaluation_step(self, batch, stage: str, dataloader_idx: int = 0) -> None:
        if batch is None:  # every sample skipped (data.on_bad_image: skip)
            return
        loss, logits, labels, domain_index, features = self._step(batch)
        if dataloader_idx == STYLE_SHIFTED_DATALOADER:
            self.style_robustness.update_shifted(stage, logits.argmax(dim=1), labels, domain_index)
            return
        self.domain_accuracy[stage].update(logits.argmax(dim=1), labels, domain_index)
        self.style_robustness.update_cross_domain(
            stage, self.head.all_domain_logits(features), labels, domain_index
        )
        # add_dataloader_idx=False: the name stays `val/loss` beside the style-shifted loader.
        self.log(
            f"{stage}/loss",
            loss,
            on_epoch=True,
            sync_dist=True,
            batch_size=len(labels),
            add_dataloader_idx=False,
        )

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, "test", dataloader_idx)

    def _evaluation_epoch_end(self, stage: str) -> None:
        matrices = self.domain_accuracy[stage].confusion_matrices()
        self.domain_accuracy[stage].reset()
        accuracies = {name: accuracy_from_confusion(m).item() for name, m in matrices.items()}
        metrics = {f"{stage}/acc/{metric_safe_name(n)}": v for n, v in accuracies.items()}
        # Samples evaluated, summed over processes: equals the split's size when nothing is
        # dropped or counted twice (distributed samplers pad by repeating samples).
        metrics[f"{stage}/num_samples"] = float(sum(m.sum().item() for m in matrices.values()))
        for key, value in summarize_domains(accuracies, self.trained_domains).items():
            metrics[f"{stage}/{key}"] = value
        metrics.update(self.style_robustness.epoch_end(stage, accuracies))
        # Values are already synced across processes by torchmetrics; the mean goes to the bar.
        mean_key = f"{stage}/acc_mean"
        if mean_key in metrics:
            self.log(mean_key, metrics.pop(mean_key), prog_bar=True, add_dataloader_idx=False)
        self.log_dict(metrics, add_dataloader_idx=False)
        self.evaluation_results[stage] = {name: m.cpu() for name, m in matrices.items()}

    def _average_batchnorm_statistics(self) -> None:
        """Average BatchNorm running statistics over processes before evaluating.

        DDP does not sync buffers in no-grad forward passes, so after training each rank holds
        statistics updated with its own last batches; without this, ranks would evaluate
        slightly different models and the checkpoint (saved from rank 0) would not reproduce
        the validation numbers.
        """
        if self.trainer.world_size <= 1:
            return
        for module in self.modules():
            if (
                isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                and module.track_running_stats
            ):
                for buffer in (module.running_mean, module.running_var):
                    buffer.copy_(self.trainer.strategy.reduce(buffer.clone(), reduce_op="mean"))

    def on_validation_epoch_start(self) -> None:
        self._average_batchnorm_statistics()

    def on_test_epoch_start(self) -> None:
        self._average_batchnorm_statistics()

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
            {
                "name": "discriminator",
                "params": list(self.discriminator.parameters()) if self.discriminator else [],
                "lr_multiplier": 1.0,
            },
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
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, CosineAnnealingToMaxEpochs) and scheduler.T_max is None:
            scheduler.set_period(self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
