"""Classifier heads over shared backbone features: one linear classifier per domain, a shared
one beside them, or the shared one alone (DomainBed's single classifier)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_modules.names import metric_safe_name


class MultiDomainHead(nn.Module):
    """The classifier heads: per-domain, shared, or both.

    Three setups, from two switches:
    - `domain_heads: true` (default), `shared_head: false`: one linear classifier per trained
      domain, keyed by domain name (the SRM paper's multi-domain setting);
    - `domain_heads: true`, `shared_head: true`: those plus one head trained on every domain's
      samples beside them (both are trained; the shared one classifies unseen domains);
    - `domain_heads: false`, `shared_head: true`: the shared head alone classifies every domain,
      trained ones included (DomainBed's ERM: one featurizer, one classifier).

    Samples are routed by their domain index (into `domain_names`). A domain without a head of
    its own (held out, never seen in training, or every domain without domain heads) is
    classified by the shared head when there is one, and otherwise by the mean of the domain
    heads' class probabilities: the unseen domain is treated as an equal mixture of the known
    ones. Outputs are logits (for unseen domains under the mean rule, log of the mean
    probability, which is a valid logit vector for cross-entropy and argmax).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        domain_names: Sequence[str],
        trained_domains: Sequence[str] | None = None,
        shared_head: bool = False,
        domain_heads: bool = True,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            in_features: dimension of the backbone's pooled features.
            num_classes: number of classes shared by all domains.
            domain_names: every domain the data may contain, in the DataModule's order.
            trained_domains: the domains that get a head (default: all of `domain_names`).
            shared_head: add one head trained on every domain's samples.
            domain_heads: one head per trained domain; false leaves the shared head alone
                (needs `shared_head: true`).
        """
        super().__init__()
        if not (domain_heads or shared_head):
            raise ValueError(
                "model.init_args.domain_heads: false leaves no classifier; set "
                "model.init_args.shared_head: true (one classifier for every domain) or keep "
                "domain_heads: true"
            )
        self.domain_names = list(domain_names)
        trained_domains = list(self.domain_names if trained_domains is None else trained_domains)
        unknown = sorted(set(trained_domains) - set(self.domain_names))
        if unknown:
            raise ValueError(f"head domains {unknown} are not in domain_names {self.domain_names}")
        self.trained_domains = trained_domains
        self.heads = nn.ModuleDict(
            {
                metric_safe_name(name): nn.Linear(in_features, num_classes)
                for name in (trained_domains if domain_heads else [])
            }
        )
        self.shared = nn.Linear(in_features, num_classes) if shared_head else None
        # domain index -> head index, -1 for domains without a head
        routing = [
            trained_domains.index(n) if domain_heads and n in trained_domains else -1
            for n in self.domain_names
        ]
        self.register_buffer("routing", torch.tensor(routing, dtype=torch.long), persistent=False)

    @property
    def shared_beside_domain_heads(self) -> bool:
        """Whether the shared head is trained beside per-domain heads: its cross-entropy is then
        added to that of each sample's own head (alone, the shared head is the sample's head)."""
        return self.shared is not None and len(self.heads) > 0

    def all_domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the head that classifies each trained domain: (B, len(trained_domains),
        num_classes), in `trained_domains` order (the rows of the cross-domain matrix). Without
        domain heads every row is the shared head's."""
        if not self.heads:
            logits = self.shared(features)
            return logits[:, None].expand(-1, len(self.trained_domains), -1)
        return torch.stack([head(features) for head in self.heads.values()], dim=1)

    def unseen_domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits for samples of a domain without a head of its own."""
        if self.shared is not None:
            return self.shared(features)
        probabilities = self.all_domain_logits(features).softmax(dim=-1).mean(dim=1)
        return probabilities.clamp_min(1e-12).log()

    def forward(self, features: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        """Each sample's logits from its own domain's head (B, num_classes)."""
        if not self.heads:
            return self.shared(features)
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
