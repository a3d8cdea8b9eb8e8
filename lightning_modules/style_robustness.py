"""Style robustness: accuracy on the style-shifted evaluation set and the cross-domain matrix.

The shifted set (`datamodules/style_shift.py`, DataLoader index 1) is scored per domain like the
plain one: `<stage>/style_acc/<domain>`, `<stage>/style_acc_mean` over the model-selection
(trained) domains, and `<stage>/style_robustness` = style_acc_mean / acc_mean, 1 for a model
that style does not affect. Beside it, the cross-domain matrix (each domain head's accuracy on
each domain's plain data, kept in `StyleRobustness.results`) is what `EvaluationArtifacts`
(`lightning_modules/callbacks/artifacts.py`) logs to MLflow as a heat map: how far each head's
knowledge carries to the other styles.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import Metric

from lightning_modules.metrics import DomainAccuracy, accuracy_from_confusion
from lightning_modules.names import metric_safe_name

#: `dataloader_idx` of the style-shifted set in validation and test (the plain set is 0).
STYLE_SHIFTED_DATALOADER = 1


def style_summary(
    style_accuracies: dict[str, float],
    plain_accuracies: dict[str, float],
    trained_domains: Sequence[str],
) -> dict[str, float]:
    """`style_acc_mean` over the selection domains and `style_robustness` (its ratio to the plain
    `acc_mean` over the same domains); robustness is left out when the plain mean is 0."""
    summary: dict[str, float] = {}
    pairs = [
        (style_accuracies[d], plain_accuracies[d])
        for d in trained_domains
        if d in style_accuracies and d in plain_accuracies
    ]
    if not pairs:
        return summary
    style_mean = sum(style for style, _ in pairs) / len(pairs)
    plain_mean = sum(plain for _, plain in pairs) / len(pairs)
    summary["style_acc_mean"] = style_mean
    if plain_mean > 0:
        summary["style_robustness"] = style_mean / plain_mean
    return summary


class CrossDomainAccuracy(Metric):
    """Accuracy of every domain head (rows) on every domain's samples (columns).

    Counts are summed across processes by torchmetrics; a domain without samples is NaN.
    """

    full_state_update = False

    def __init__(self, num_heads: int, num_domains: int) -> None:
        """Settings (each one also a command-line option).

        Args:
            num_heads: number of domain heads (rows).
            num_domains: number of data domains (columns).
        """
        super().__init__()
        self.add_state("correct", torch.zeros(num_heads, num_domains), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_domains), dist_reduce_fx="sum")

    def update(
        self, all_logits: torch.Tensor, target: torch.Tensor, domain_index: torch.Tensor
    ) -> None:
        """all_logits (B, num_heads, num_classes); target (B,); domain_index (B,)."""
        correct = (all_logits.argmax(dim=-1) == target[:, None]).to(self.correct.dtype)
        self.correct.index_add_(1, domain_index, correct.T)
        self.total.index_add_(0, domain_index, torch.ones_like(target, dtype=self.total.dtype))

    def compute(self) -> torch.Tensor:
        accuracy = self.correct / self.total.clamp(min=1)
        return torch.where(self.total > 0, accuracy, torch.nan)


class StyleRobustness(nn.Module):
    """Per-stage accumulators of the style metrics, for `MultiDomainClassifier`.

    The step calls `update_shifted` for batches of the shifted set and `update_cross_domain` for
    the plain set; `epoch_end` turns them into metrics. Both are reported only for passes in
    which the shifted set was evaluated (its cadence is `style_shift.every_n_epochs`).
    """

    def __init__(
        self,
        domain_names: Sequence[str],
        trained_domains: Sequence[str],
        num_classes: int,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            domain_names: every domain of the data, in the DataModule's order.
            trained_domains: the domains with a head (model selection uses them, as for acc_mean).
            num_classes: classes shared by all domains.
            stages: the stages that evaluate.
        """
        super().__init__()
        self.domain_names = list(domain_names)
        self.trained_domains = list(trained_domains)
        self.shifted = nn.ModuleDict(
            {stage: DomainAccuracy(self.domain_names, num_classes) for stage in stages}
        )
        self.cross_domain = nn.ModuleDict(
            {
                stage: CrossDomainAccuracy(len(self.trained_domains), len(self.domain_names))
                for stage in stages
            }
        )
        # Whether this pass saw shifted batches: a skipped pass reports nothing.
        self._shifted_seen = dict.fromkeys(stages, False)
        #: Shifted-set confusion matrices and the cross-domain matrix of the last reported pass;
        #: each reported pass puts a new dict here (`EvaluationArtifacts` logs each one once).
        self.results: dict[str, dict] = {}

    def update_shifted(
        self, stage: str, preds: torch.Tensor, target: torch.Tensor, domain_index: torch.Tensor
    ) -> None:
        self.shifted[stage].update(preds, target, domain_index)
        self._shifted_seen[stage] = True

    def update_cross_domain(
        self,
        stage: str,
        all_logits: torch.Tensor,
        target: torch.Tensor,
        domain_index: torch.Tensor,
    ) -> None:
        self.cross_domain[stage].update(all_logits, target, domain_index)

    def epoch_end(self, stage: str, plain_accuracies: dict[str, float]) -> dict[str, float]:
        """The stage's style metrics (full names), or {} when the shifted set was not evaluated;
        resets the accumulators either way."""
        seen, self._shifted_seen[stage] = self._shifted_seen[stage], False
        if not seen:
            self.cross_domain[stage].reset()
            return {}
        matrices = self.shifted[stage].confusion_matrices()
        self.shifted[stage].reset()
        cross_domain = self.cross_domain[stage].compute()
        self.cross_domain[stage].reset()
        self.results[stage] = {
            "style_confusion": {name: m.cpu() for name, m in matrices.items()},
            "cross_domain": cross_domain.cpu(),
        }
        style_accuracies = {name: accuracy_from_confusion(m).item() for name, m in matrices.items()}
        metrics = {
            f"{stage}/style_acc/{metric_safe_name(name)}": value
            for name, value in style_accuracies.items()
        }
        summary = style_summary(style_accuracies, plain_accuracies, self.trained_domains)
        metrics.update({f"{stage}/{key}": value for key, value in summary.items()})
        return metrics
