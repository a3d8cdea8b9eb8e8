"""Validation, test and prediction steps of `MultiDomainClassifier`: per-domain accuracy from
confusion matrices, the summaries over trained and held-out domains, style robustness, and
BatchNorm statistics averaged over processes before evaluating."""

from __future__ import annotations

import torch

from lightning_modules.metrics import accuracy_from_confusion, summarize_domains
from lightning_modules.names import metric_safe_name
from lightning_modules.style_robustness import STYLE_SHIFTED_DATALOADER


class EvaluationSteps:
    """Lightning's evaluation hooks for a model with `_step(batch)` (loss, logits, labels,
    domain index, head inputs), `domain_accuracy[stage]`, `style_robustness`, `head`,
    `trained_domains` and `evaluation_results` (mixed into `MultiDomainClassifier`)."""

    def _evaluation_step(self, batch, stage: str, dataloader_idx: int = 0) -> dict | None:
        """Update the metrics; return the logits, labels, domains for callbacks (SWAD's loss)."""
        if batch is None:  # every sample skipped (data.on_bad_image: skip)
            return None
        loss, logits, labels, domain_index, head_inputs = self._step(batch)
        if dataloader_idx == STYLE_SHIFTED_DATALOADER:
            self.style_robustness.update_shifted(stage, logits.argmax(dim=1), labels, domain_index)
            return None
        self.domain_accuracy[stage].update(logits.argmax(dim=1), labels, domain_index)
        self.style_robustness.update_cross_domain(
            stage, self.head.all_domain_logits(head_inputs), labels, domain_index
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
        return {"logits": logits, "labels": labels, "domains": domain_index}

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._evaluation_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._evaluation_step(batch, "test", dataloader_idx)

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
