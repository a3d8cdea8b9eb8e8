"""`MultiDomainClassifier`: a recalibrated backbone shared by all domains, one head per domain."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.callbacks.faults import checkpoint_note
from lightning_modules.checkpoint_migration import (
    gather_definition_error,
    migrate_checkpoint,
    migrate_state_dict,
)
from lightning_modules.evaluation import EvaluationSteps
from lightning_modules.growth import grow_from_checkpoint
from lightning_modules.methods import (
    TRAINING_METHODS,
    MethodOutput,
    TrainingBatch,
    create_method,
    format_method_options,
)
from lightning_modules.metrics import (
    DomainAccuracy,
)
from lightning_modules.models.backbones import create_backbone
from lightning_modules.models.heads import MultiDomainHead
from lightning_modules.models.recalibration import format_module_options
from lightning_modules.optimization import (
    CosineAnnealingToMaxEpochs,
    scheduler_config,
    sgd_recipe,
    step_schedulers,
)
from lightning_modules.style_robustness import StyleRobustness


class MultiDomainClassifier(EvaluationSteps, pl.LightningModule):
    """Shared recalibrated backbone + `MultiDomainHead`; each sample's loss through its own head.

    Metrics (names with `/`; domain names pass through `metric_safe_name`): `train/loss`,
    `train/acc`, `val/loss`, `val/acc/<domain>`, `val/acc_mean` and `val/acc_worst` over the
    trained domains (the model-selection criterion: held-out domains never select a model),
    `val/acc_held_out_mean` when domains are held out, and the same under `test/`. Confusion
    matrices of the last validation and test pass are kept in `evaluation_results`. With the
    DataModule's `style_shift`, a second evaluation loader (index 1) holds the style-shifted
    images: `val/style_acc/<domain>`, `val/style_acc_mean`, `val/style_robustness`, and the
    cross-domain accuracy matrix (`lightning_modules/style_robustness.py`), which the
    `EvaluationArtifacts` callback logs as a heat map. The training itself is the training
    method's (`model.method`, `lightning_modules/methods/`): the model calls its hooks and has
    no method-specific code.
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
        domain_heads: bool = True,
        optimizer: OptimizerCallable = sgd_recipe,
        lr_scheduler: LRSchedulerCallable | None = None,
        recalibration_weight_decay: bool = False,
        backbone_lr_multiplier: float = 1.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        init_from_checkpoint: str | None = None,
        new_head_init: str = "mean",
        method: str = "erm",
        method_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
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
            domain_heads: one head per trained domain (the SRM paper's setting); false with
                `shared_head: true` leaves one classifier for every domain (DomainBed's).
            optimizer: optimizer class_path/init_args (default: SGD 0.1, momentum 0.9, wd 1e-4).
            lr_scheduler: LR scheduler class_path/init_args, stepped every epoch, or after every
                optimizer step if its class says `interval = "step"` (e.g.
                `lightning_modules.optimization.InverseDecayLR`) (default: none).
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
            method: training method, one of the names registered in `lightning_modules/methods/`
                ({registered_methods}); `erm` is plain empirical risk minimisation, `dann` adapts
                to the DataModule's unlabelled `target_domains`. See docs/training-methods.md.
            method_kwargs: the method's options, e.g. `{weight: 1.0, hidden_features: 1024}` for
                `dann`; a key the method lacks fails when the model is built, naming the valid
                ones.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], logger=False)
        if backbone_lr_multiplier <= 0:
            raise ValueError(f"model.backbone_lr_multiplier={backbone_lr_multiplier} must be > 0")
        self.domain_names = list(domain_names or ["default"])
        self.trained_domains = list(trained_domains or self.domain_names)
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        #: Classes shared by all domains (what `MethodHost` promises the training methods).
        self.num_classes = num_classes
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
            domain_heads=domain_heads,
        )
        if new_head_init not in ("mean", "fresh"):
            raise ValueError(f"model.new_head_init={new_head_init!r}; valid choices: mean, fresh")
        #: The training method (`model.method`: its parameters and buffers are checkpointed).
        self.method = create_method(method, method_kwargs)
        self.method.attach(self)
        #: The method's options that make it a variant, `key=value,...` ('' for the defaults).
        self.method_options = format_method_options(method, method_kwargs)
        self.automatic_optimization = not self.method.manual_optimization
        # Heads created for domains the checkpoint lacks (set by _init_from_checkpoint).
        self.grown_heads: list[str] = []
        if init_from_checkpoint:
            # Before channels_last/compile, which must see the loaded weights.
            self.grown_heads = grow_from_checkpoint(self, init_from_checkpoint, new_head_init)
        for stage, layer in self.method.stage_layers().items():
            self.backbone.add_stage_layer(stage, layer)
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
        loaded with `weights_only=True`, so it cannot run code. Checkpoints of earlier versions
        are read with their settings renamed (`lightning_modules/checkpoint_migration.py`).
        """
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        buffer = io.BytesIO()
        torch.save(migrate_checkpoint(checkpoint), buffer)
        buffer.seek(0)
        return cls.load_from_checkpoint(
            buffer,
            map_location="cpu",
            weights_only=True,
            weights=None,
            init_from_checkpoint=None,
            compile=False,
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming a checkpoint of an earlier version: its state keys as this version names them.
        state = migrate_state_dict(checkpoint.get("state_dict", {}))
        checkpoint["state_dict"] = state
        problem = gather_definition_error(self.hparams, state)
        if problem is not None:
            raise ValueError(problem)

    def variant_name(self) -> str:
        """`<module>[<options>]` and, for a method other than ERM, `+<method>[<options>]`:
        what the model is, as run names and tables show it (`srm+coral[mmd_gamma=0.5]`)."""
        name = self.hparams.recalibration
        if self.module_options:
            name += f"[{self.module_options}]"
        if self.hparams.method != "erm":
            name += f"+{self.hparams.method}"
            if self.method_options:
                name += f"[{self.method_options}]"
        return name

    # ----- forward ------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of a batch of normalised images (the DataModule normalises them in
        its `on_after_batch_transfer`)."""
        images = self.method.transform_images(self, images)
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def classify(self, features: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Each sample's logits from its own domain's head (of the method's `head_inputs`)."""
        return self.head(self.method.head_inputs(self, features, domains), domains)

    def forward(self, images: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images), domain_index)

    def classification_loss(
        self, features: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, logits) of features through each sample's own head; in training,
        plus the shared head's cross-entropy when it sits beside per-domain heads."""
        smoothing = self.hparams.label_smoothing
        inputs = self.method.head_inputs(self, features, domains)
        logits = self.head(inputs, domains)
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        if self.head.shared_beside_domain_heads and self.training:
            shared_logits = self.head.shared(inputs)
            loss = loss + F.cross_entropy(shared_logits, labels, label_smoothing=smoothing)
        return loss, logits

    def _step(self, batch) -> tuple[torch.Tensor, ...]:
        """(loss, logits, labels, domain_index, head inputs) of an evaluation batch."""
        images, labels, domain_index = batch
        features = self.features(images)
        loss, logits = self.classification_loss(features, labels, domain_index)
        return (
            loss,
            logits,
            labels,
            domain_index,
            self.method.head_inputs(self, features, domain_index),
        )

    # ----- stages -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        target = None
        if isinstance(batch, dict):  # CombinedLoader: labelled source + unlabelled target
            batch, target = batch["source"], batch["target"]
        if batch is None:  # every sample skipped: returning None skips the optimizer step
            return None
        images, labels, domains = batch
        # Only the target images are used: their labels (all `UNLABELLED`) never reach a loss.
        step = TrainingBatch(images, labels, domains, None if target is None else target[0])
        if self.automatic_optimization:
            output = self.method.training_loss(self, step)
        else:
            output = self.method.manual_training_step(self, step)
        self._check_finite(output.loss, batch_idx)
        self._log_training(output)
        return output.loss if self.automatic_optimization else None

    def _check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); lower the learning rate or "
                f"check the data; {checkpoint_note(self)}"
            )

    def _log_training(self, output: MethodOutput) -> None:
        batch_size = len(output.labels)
        self.log(
            "train/loss",
            output.loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
        )
        if output.logits is not None:
            self.train_accuracy(output.logits.argmax(dim=1), output.labels)
            self.log("train/acc", self.train_accuracy, on_step=False, on_epoch=True, prog_bar=True)
        for name, value in output.metrics.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size)

    def training_progress(self) -> float:
        """Fraction of the optimizer steps done, for methods' schedules (1 off-trainer)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return 1.0
        total = trainer.estimated_stepping_batches
        return self.global_step / total if 0 < total < float("inf") else 1.0

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
            *self.method.parameter_groups(),
        ]
        return [group for group in groups if group["params"]]

    def configure_optimizers(self):
        """The method's optimizer(s) over `parameter_groups()`, each group's learning rate times
        its `lr_multiplier`, and the scheduler (one per optimizer), stepped every epoch or, if its
        class declares `interval = "step"`, after every optimizer step."""
        optimizers = self.method.configure_optimizers(
            self, self.optimizer_factory, self.parameter_groups()
        )
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * group.get("lr_multiplier", 1.0)
                if group["lr"] <= 0:
                    raise ValueError(
                        f"learning rate of parameter group {group.get('name')!r} is "
                        f"{group['lr']}; model.optimizer.init_args.lr (and "
                        "backbone_lr_multiplier) must be positive"
                    )
        if self.lr_scheduler_factory is None:
            return optimizers[0] if len(optimizers) == 1 else optimizers
        configured = []
        for optimizer in optimizers:
            scheduler = self.lr_scheduler_factory(optimizer)
            if isinstance(scheduler, CosineAnnealingToMaxEpochs) and scheduler.T_max is None:
                scheduler.set_period(self.trainer.max_epochs)
            configured.append(scheduler_config(optimizer, scheduler))
        return configured[0] if len(configured) == 1 else configured

    # Lightning steps schedulers itself only under automatic optimisation.
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not self.automatic_optimization:
            step_schedulers(self.lr_schedulers(), "step")

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:
            step_schedulers(self.lr_schedulers(), "epoch")


# `--help` lists the registered methods (the docstring is read by LightningCLI for the help).
MultiDomainClassifier.__init__.__doc__ = MultiDomainClassifier.__init__.__doc__.replace(
    "{registered_methods}", ", ".join(TRAINING_METHODS)
)
