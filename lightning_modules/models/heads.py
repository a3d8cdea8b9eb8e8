"""Classifier heads over shared backbone features: one linear classifier per domain."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_modules.names import metric_safe_name


class MultiDomainHead(nn.Module):
    """One linear classifier per trained domain, keyed by domain name, plus an optional shared one.

    Samples are routed by their domain index (into `domain_names`). A domain without a head of
    its own (held out, or never seen in training) is classified by the shared head when there is
    one, and otherwise by the mean of the domain heads' class probabilities: the unseen domain is
    treated as an equal mixture of the known ones. Outputs are logits (for unseen domains, log of
    the mean probability, which is a valid logit vector for cross-entropy and argmax).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        domain_names: Sequence[str],
        trained_domains: Sequence[str] | None = None,
        shared_head: bool = False,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            in_features: dimension of the backbone's pooled features.
            num_classes: number of classes shared by all domains.
            domain_names: every domain the data may contain, in the DataModule's order.
            trained_domains: the domains that get a head (default: all of `domain_names`).
            shared_head: add one more head trained on every domain's samples.
        """
        super().__init__()
        self.domain_names = list(domain_names)
        trained_domains = list(self.domain_names if trained_domains is None else trained_domains)
        unknown = sorted(set(trained_domains) - set(self.domain_names))
        if unknown:
            raise ValueError(f"head domains {unknown} are not in domain_names {self.domain_names}")
        self.trained_domains = trained_domains
        self.heads = nn.ModuleDict(
            {
                metric_safe_name(name): nn.Linear(in_features, num_classes)
                for name in trained_domains
            }
        )
        self.shared = nn.Linear(in_features, num_classes) if shared_head else None
        # domain index -> head index, -1 for domains without a head
        routing = [
            trained_domains.index(n) if n in trained_domains else -1 for n in self.domain_names
        ]
        self.register_buffer("routing", torch.tensor(routing, dtype=torch.long), persistent=False)

    def all_domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of every domain head: (B, num_heads, num_classes)."""
        return torch.stack([head(features) for head in self.heads.values()], dim=1)

    def unseen_domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.shared is not None:
            return self.shared(features)
        probabilities = self.all_domain_logits(features).softmax(dim=-1).mean(dim=1)
        return probabilities.clamp_min(1e-12).log()

    def forward(self, features: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        """Each sample's logits from its own domain's head (B, num_classes)."""
        all_logits = self.all_domain_logits(features)
        head_index = self.routing[domain_index]
        has_head = head_index >= 0
        logits = all_logits[
            torch.arange(len(features), device=features.device), head_index.clamp(min=0)
        ]
        if not bool(has_head.all()):
            unseen = self.unseen_domain_logits(features[~has_head])
            logits = logits.clone()
            logits[~has_head] = unseen
        return logits
