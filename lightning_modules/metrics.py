"""Per-domain accuracy from torchmetrics confusion matrices.

A confusion matrix per domain holds everything a stage reports: accuracy (trace / total),
per-class accuracy (diagonal / row sums) and the number of samples seen; torchmetrics sums it
across processes, so the numbers are the same on one GPU or many. Metric names are in
`lightning_modules/names.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix


class DomainAccuracy(nn.Module):
    """Confusion matrix per domain for one stage; accuracy, worst and mean derived from it."""

    def __init__(self, domain_names: Sequence[str], num_classes: int) -> None:
        super().__init__()
        self.domain_names = list(domain_names)
        self.num_classes = num_classes
        self.confusion = nn.ModuleList(
            MulticlassConfusionMatrix(num_classes=num_classes) for _ in self.domain_names
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor, domain_index: torch.Tensor) -> None:
        """preds: predicted class indices (B,); target (B,); domain_index (B,)."""
        for index in torch.unique(domain_index).tolist():
            mask = domain_index == index
            self.confusion[index].update(preds[mask], target[mask])

    def confusion_matrices(self) -> dict[str, torch.Tensor]:
        """Synced confusion matrices (rows: true class) of the domains that had samples."""
        matrices = {}
        for name, metric in zip(self.domain_names, self.confusion, strict=True):
            # compute() syncs across processes; a domain this rank never saw still takes part.
            matrix = metric.compute()
            if matrix.sum() > 0:
                matrices[name] = matrix
        return matrices

    def reset(self) -> None:
        for metric in self.confusion:
            metric.reset()


def accuracy_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.diagonal().sum() / matrix.sum().clamp(min=1)


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Accuracy of each true class; NaN for classes with no samples."""
    totals = matrix.sum(dim=1)
    return torch.where(totals > 0, matrix.diagonal() / totals.clamp(min=1), torch.nan)


def summarize_domains(
    accuracies: dict[str, float], trained_domains: Sequence[str]
) -> dict[str, float]:
    """`acc_mean`/`acc_worst` over the domains used for model selection (trained domains), and
    `acc_held_out_mean` over the others (held-out domains are never used to select a model)."""
    summary: dict[str, float] = {}
    selected = [accuracies[d] for d in trained_domains if d in accuracies]
    if selected:
        summary["acc_mean"] = sum(selected) / len(selected)
        summary["acc_worst"] = min(selected)
    held_out = [value for name, value in accuracies.items() if name not in trained_domains]
    if held_out:
        summary["acc_held_out_mean"] = sum(held_out) / len(held_out)
    return summary
