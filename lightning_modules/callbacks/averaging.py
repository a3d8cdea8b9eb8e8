"""Weight averaging as callbacks, combinable with any training method: `EMA` and `SWAD`.

Both build on Lightning's `WeightAveraging(device=None, use_buffers=True, **kwargs)`: a torch
`AveragedModel` copy of the whole LightningModule (so a method's own parameters and buffers, a
discriminator say, and BatchNorm statistics are averaged too), updated in `on_train_batch_end`
when `trainer.global_step` has advanced, copied into the model when training ends, and written
as the checkpoint's `state_dict` (the trained weights go to `current_model_state`, from which a
resumed fit continues). Add one to any run:

    --trainer.callbacks+=lightning_modules.callbacks.averaging.EMA
    --config configs/averaging/ema.yaml       # the same, as an overlay
    --config configs/averaging/swad.yaml      # SWAD, with validation every 100 steps

`trainer.global_step` counts optimizer steps: every `optimizer.step()` of every optimizer.
Under manual optimisation a method that steps k optimizers per batch advances it by k per
batch (tests/lightning_modules/callbacks/test_averaging.py checks this), and `max_steps`
counts the same steps, while `val_check_interval` counts batches. The averages are still
updated at most once per batch, after all of the batch's steps.

Both subclasses use Lightning's own state, `_average_model` (the torch `AveragedModel`) and
`_latest_update_step`: private names, with no public accessor, checked by
`test_lightnings_private_weight_averaging_members_still_exist`.

EMA: avg <- decay * avg + (1 - decay) * w, the first update copying w (torch's
`get_ema_avg_fn`). DomainBed has no EMA, so the defaults are Lightning's `EMAWeightAveraging`:
decay 0.999, an update after every optimizer step from the first. The averaged weights are
swapped in for validation, so `val/*` and the checkpoints are the EMA model's.

SWAD (Cha et al., NeurIPS 2021, arXiv:2102.08604; DomainBed-based reference khanrc/swad): an
equal-weight running average of the weights after every training step (a segment), frozen at
each validation with that validation's loss and reset; the final model is the equal-weight mean
of the segments in the loss valley (`lightning_modules/callbacks/loss_valley.py`: start, growth,
end, flush), and training stops early (`trainer.should_stop`) when the valley dies. Segments are
equally long when validation is periodic, so this is the mean of the per-step weights of the
valley, as in the paper. Notes:
- The validation loss is the reference's `tr_outloss`: the mean over the trained domains of
  each domain's mean cross-entropy on its validation images (no label smoothing), of the
  online weights (SWAD's validation does not swap the average in). It is computed from the
  logits, labels and domains `validation_step` returns (`MultiDomainClassifier` returns them),
  not from the logged `val/loss`, which averages over images rather than domains and includes
  held-out and target domains (using them would select on the test domains).
- SWAD needs validation every few hundred steps, not once per epoch: DomainBed-style
  `trainer.val_check_interval: 100` with `check_val_every_n_epoch: null` (the overlay; the
  paper evaluates every 100 steps, 50 for VLCS, 500 for DomainNet). Steps after the last
  validation have no loss and are left out, so end training on a validation (`max_steps` a
  multiple of the interval) as the reference does.
- Without convergence by the end, the final model is the last validated segment (the reference
  does the same and says so); without any validation, the model keeps its trained weights.
- Checkpoints: `state_dict` holds the SWAD model as it would be if training ended then (valley
  plus flush); `last.ckpt` written at the last validation therefore holds the final SWAD
  weights. `val/acc_mean` is the online model's, so the best-by-validation checkpoint is not
  SWAD's choice: test the final model (`last.ckpt`), or run with `--checkpoint.monitor null`.
  The callback state holds the valley and up to `n_tolerance` segments (each a copy of the
  weights, kept on the CPU) and the running segment, so a resumed run ends with the same
  weights as an uninterrupted one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EMAWeightAveraging, WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_modules.callbacks.loss_valley import LossValley, SegmentMean

#: The keys of a validation step's outputs SWAD reads.
VALIDATION_OUTPUTS = ("logits", "labels", "domains")


def module_tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Parameters then buffers: the order in which `WeightAveraging` pairs a model's tensors
    with the average's."""
    return itertools.chain(module.parameters(), module.buffers())


def setup_average(
    callback: WeightAveraging, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
) -> None:
    """`WeightAveraging.setup`, alone among the callbacks, with the average's copy of the model
    sharing, not copying, the model's own callables.

    Each averaging callback writes its average as the checkpoint's `state_dict` and the trained
    weights as `current_model_state`, so two would overwrite each other: one is allowed.
    `WeightAveraging.setup` deep-copies the whole LightningModule. The optimizer and scheduler
    factories LightningCLI gives the model (`MultiDomainClassifier.optimizer_factory`) hold the
    CLI itself, and through it the config, the trainer's settings and the MLflow client (which
    cannot be deep-copied); the copy only ever holds weights, so it gets the same objects.
    """
    others = [c for c in trainer.callbacks if isinstance(c, WeightAveraging) and c is not callback]
    if others:
        raise ValueError(
            f"trainer.callbacks has {type(callback).__name__} and {type(others[0]).__name__}: "
            "both would write their average as the checkpoint's weights; keep one"
        )
    shared = {
        name: value
        for name, value in vars(pl_module).items()
        if callable(value) and not isinstance(value, torch.nn.Module)
    }
    for name in shared:
        setattr(pl_module, name, None)
    try:
        WeightAveraging.setup(callback, trainer, pl_module, stage)
    finally:
        for name, value in shared.items():
            setattr(pl_module, name, value)
    if stage == TrainerFn.FITTING and callback._average_model is not None:
        for name, value in shared.items():
            setattr(callback._average_model.module, name, value)


class EMA(EMAWeightAveraging):
    """Exponential moving average of the weights (Lightning's `EMAWeightAveraging`).

    Same settings and defaults as Lightning's, with one difference under manual optimisation:
    Lightning asks whether to update only for the batch's last optimizer step, so with k
    optimizer steps per batch and `update_every_n_steps` n > 1 it may never update (k = 2,
    n = 2: the step index is always odd) and training would end by copying the initial weights
    into the model. Here a batch updates the average if any of its optimizer steps qualifies.
    With one optimizer step per batch (automatic optimisation) both are the same.

    Args:
        decay: weight of the average at each update (avg <- decay * avg + (1 - decay) * w).
        update_every_n_steps: update after every n-th optimizer step (0-based step index
            divisible by n).
        update_starting_at_step: first optimizer step index (0-based) that may update; null:
            from the first.
        update_starting_at_epoch: also update at the end of every epoch from this one (0-based);
            null: never at epoch ends.
        device: where to keep the average (e.g. `cpu` to save accelerator memory); null: the
            model's device.
        use_buffers: average the buffers too (BatchNorm statistics); false keeps them as they
            were when training started (recompute the statistics afterwards).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: str | None = None,
        use_buffers: bool = True,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay={decay} must be in [0, 1] (Lightning's default: 0.999)")
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self.decay = decay
        self._steps_seen = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        setup_average(self, trainer, pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps_seen = trainer.global_step  # a resumed fit starts from the checkpoint's

    # Lightning's WeightAveraging acts in these hooks whenever its average exists, so after a
    # fit, `trainer.test(ckpt_path=...)` on the same trainer would evaluate the checkpoint's
    # trained weights (`current_model_state`) and `trainer.validate` the last average instead
    # of the checkpoint's. Outside fit the model keeps the checkpoint's (averaged) state_dict.
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        steps = range(self._steps_seen, trainer.global_step)
        self._steps_seen = trainer.global_step
        if trainer.global_step > self._latest_update_step and any(
            self.should_update(step_idx=step) for step in steps
        ):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = trainer.global_step


class SWAD(WeightAveraging):
    """SWAD: the mean of per-step weights over the validation-loss valley (see the module's
    docstring for the rules, the validation loss and the checkpoints).

    Args:
        n_converge: validations in the convergence window: the valley starts at the oldest of
            them once it has the lowest loss of the window (the paper: 3).
        n_tolerance: validations whose lowest loss must stay within the threshold for the
            oldest of them to join the valley; otherwise the valley ends and training stops
            (the paper: 6).
        tolerance_ratio: the threshold is (1 + tolerance_ratio) x the mean loss of the
            convergence window (the paper: 0.3; 0.2 for VLCS).
        device: where to keep the running segment average; null: the model's device. Frozen
            segments are always kept on the CPU.
        use_buffers: average the buffers too (BatchNorm statistics); false keeps them as they
            were when training started (recompute the statistics afterwards).
    """

    def __init__(
        self,
        n_converge: int = 3,
        n_tolerance: int = 6,
        tolerance_ratio: float = 0.3,
        device: str | None = None,
        use_buffers: bool = True,
    ) -> None:
        super().__init__(device=device, use_buffers=use_buffers)
        self.valley = LossValley(n_converge, n_tolerance, tolerance_ratio)
        #: Frozen segments a future decision may need, by segment number (CPU tensors).
        self._segments: dict[int, list[torch.Tensor]] = {}
        #: The equal-weight mean of the segments in the valley so far.
        self._valley_mean = SegmentMean()
        self._state_names: list[str] = []
        self._trained_indices: list[int] = []
        self._loss_sums: torch.Tensor | None = None
        self._loss_counts: torch.Tensor | None = None

    # ----- setup ----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        setup_average(self, trainer, pl_module, stage)
        if stage != TrainerFn.FITTING:
            return
        domains = getattr(pl_module, "domain_names", None)
        trained = getattr(pl_module, "trained_domains", None)
        if domains is None or trained is None:
            raise TypeError(
                f"SWAD needs the model's `domain_names` and `trained_domains` to compute the "
                f"validation loss on the trained domains; {type(pl_module).__name__} lacks them "
                "(MultiDomainClassifier has both)"
            )
        self._trained_indices = [list(domains).index(name) for name in trained]
        self._state_names = [
            name
            for name, _ in itertools.chain(pl_module.named_parameters(), pl_module.named_buffers())
        ]

    def _scoring(self, trainer: pl.Trainer) -> bool:
        """A validation during fit (not the sanity check, not `trainer.validate`)."""
        return (
            self._average_model is not None
            and not trainer.sanity_checking
            and trainer.state.fn == TrainerFn.FITTING
        )

    # ----- the validation loss of the trained domains ---------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # No swap: SWAD scores the online weights (WeightAveraging would validate the average).
        self._loss_sums = self._loss_counts = None

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._scoring(trainer) or dataloader_idx != 0 or outputs is None:
            return
        if not isinstance(outputs, Mapping) or not all(k in outputs for k in VALIDATION_OUTPUTS):
            raise TypeError(
                "SWAD reads each validation batch's logits, labels and domain indices from what "
                f"`validation_step` returns (a dict with keys {', '.join(VALIDATION_OUTPUTS)}, as "
                f"MultiDomainClassifier's); {type(pl_module).__name__}.validation_step returned "
                f"{type(outputs).__name__}"
            )
        logits, labels, domains = (outputs[key].detach() for key in VALIDATION_OUTPUTS)
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        size = len(pl_module.domain_names)
        if self._loss_sums is None:
            self._loss_sums = torch.zeros(size, dtype=torch.float64, device=losses.device)
            self._loss_counts = torch.zeros(size, dtype=torch.float64, device=losses.device)
        self._loss_sums.index_add_(0, domains, losses.double())
        self._loss_counts.index_add_(0, domains, torch.ones_like(losses, dtype=torch.float64))

    def _trained_domain_loss(self, trainer: pl.Trainer) -> float | None:
        """Mean over the trained domains of each one's mean cross-entropy (all processes)."""
        if self._loss_sums is None:
            return None
        sums = trainer.strategy.reduce(self._loss_sums, reduce_op="sum")
        counts = trainer.strategy.reduce(self._loss_counts, reduce_op="sum")
        means = [sums[i] / counts[i] for i in self._trained_indices if counts[i] > 0]
        return float(torch.stack(means).mean()) if means else None

    # ----- segments and the valley ----------------------------------------------------------
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._scoring(trainer):
            return
        loss = self._trained_domain_loss(trainer)
        if loss is None:
            raise ValueError(
                "SWAD got no validation images of the trained domains: the data must hold out "
                "part of each trained domain (data.init_args.val_fraction > 0) and "
                "`validation_step` must return their logits, labels and domains"
            )
        assert self._average_model is not None
        if int(self._average_model.n_averaged) == 0:
            return  # no step since the last validation: nothing to freeze
        index = len(self.valley.losses)
        self._segments[index] = [
            t.detach().to("cpu", copy=True) for t in module_tensors(self._average_model.module)
        ]
        self._average_model.n_averaged.zero_()  # the next update starts the next segment
        converged = self.valley.converged
        for joined in self.valley.observe(loss):
            self._valley_mean.add(self._segments[joined])
        keep_from = min(self.valley.first_needed(), index)
        self._segments = {i: s for i, s in self._segments.items() if i >= keep_from}
        if self.valley.converged and not converged:
            rank_zero_info(
                f"SWAD: converged at segment {self.valley.start} (global step "
                f"{trainer.global_step}); loss threshold {self.valley.threshold:.6f}"
            )
        if self.valley.dead:
            rank_zero_info(
                f"SWAD: the loss valley ended at segment {self.valley.stop - 1} (global step "
                f"{trainer.global_step}): stopping training"
            )
            trainer.should_stop = True

    def final_weights(self) -> list[torch.Tensor] | None:
        """The SWAD model if training ended now (parameters then buffers, on the CPU): the
        valley's mean with the flushed queue; before convergence the last validated segment;
        None before any validation."""
        if not self.valley.losses:
            return None
        if not self.valley.converged:
            return self._segments[len(self.valley.losses) - 1]
        mean = self._valley_mean.copy()
        for index in self.valley.flush():
            mean.add(self._segments[index])
        # At least one segment: the start's loss is within the threshold.
        assert mean.tensors is not None
        return mean.tensors

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        weights = self.final_weights()
        if weights is None:
            rank_zero_warn("SWAD: no validation during training; the model keeps its weights")
            return
        if not self.valley.converged:
            rank_zero_warn(
                "SWAD: the validation loss never converged (no window of "
                f"{self.valley.n_converge} validations with its oldest lowest); the model is the "
                "last segment's average. Train longer or validate more often "
                "(trainer.val_check_interval)"
            )
        for current, average in zip(module_tensors(pl_module), weights, strict=True):
            current.data.copy_(average)

    # ----- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            return  # not fitting: the model already holds what it holds
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        weights = self.final_weights()
        if weights is not None:
            state = dict(checkpoint["state_dict"])
            for name, value in zip(self._state_names, weights, strict=True):
                if name in state:  # non-persistent buffers are not in the state dict
                    state[name] = value.to(dtype=state[name].dtype)
            checkpoint["state_dict"] = state

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None or trainer.state.fn != TrainerFn.FITTING:
            return  # testing a checkpoint: the model keeps its SWAD weights
        if "current_model_state" not in checkpoint:
            rank_zero_warn(
                "SWAD: the checkpoint was not written with SWAD; SWAD starts afresh from its "
                "weights"
            )
            return
        # The model has been loaded from `state_dict` (the SWAD weights): training continues
        # from the trained ones.
        pl_module.load_state_dict(checkpoint["current_model_state"])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            valley=self.valley.state_dict(),
            segments=dict(self._segments),
            valley_mean=self._valley_mean.tensors,
            valley_count=self._valley_mean.count,
        )
        if self._average_model is not None:
            state["running"] = [
                t.detach().to("cpu", copy=True) for t in module_tensors(self._average_model.module)
            ]
            state["running_count"] = int(self._average_model.n_averaged)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "valley" not in state_dict:
            return
        self.valley.load_state_dict(state_dict["valley"])
        self._segments = {int(i): list(s) for i, s in state_dict["segments"].items()}
        self._valley_mean = SegmentMean(state_dict["valley_mean"], state_dict["valley_count"])
        if self._average_model is not None and "running" in state_dict:
            targets = list(module_tensors(self._average_model.module))
            for target, value in zip(targets, state_dict["running"], strict=True):
                target.data.copy_(value)
            self._average_model.n_averaged.fill_(state_dict["running_count"])
