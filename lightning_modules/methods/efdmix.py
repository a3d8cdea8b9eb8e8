"""EFDMix: exact feature distribution mixing (Zhang, Li, Li, Jia, Zhang; "Exact Feature
Distribution Matching for Arbitrary Style Transfer and Domain Generalization", CVPR 2022;
arXiv:2203.07740). Official code: YBZh/EFDM (`DomainGeneralization`), also in Dassl.pytorch
(`dassl/modeling/ops/efdmix.py`).

MixStyle matches a partner's mean and standard deviation; EFDMix matches its whole empirical
distribution, per (sample, channel), by sorting. In training only, after chosen stages:

    sort each (sample, channel) row of H*W values of x;
    y_hat = the partner pi's sorted values, placed at x's ranks (x's k-th smallest position
            gets the partner's k-th smallest value);
    out = x + (1 - lam) (y_hat - x.detach())

whose value is lam x + (1 - lam) y_hat, and whose gradient is the identity with respect to x
plus (1 - lam) times the output's gradient into the partner's values (through the sort). lam ~
Beta(alpha, alpha) per sample, pi 'random' or 'crossdomain' as in MixStyle (the method orders
the batch by domain first, see `StyleStatisticsMethod`); one coin per call, for the whole
batch, decides whether it acts (probability p).

Defaults (the official repository's): p=0.5, alpha=0.1, mix='random' (the module's default;
its PACS leave-one-domain-out script `resnet18_efdmix_l123` uses 'crossdomain' with Dassl's
sampler of 2 domains per batch), and the stages of that script, after layer1-3. Its README
recommends layer1 and layer2 ("two consecutive lower layers") and never the last stage. With
`stages` left unset the layers go after stages 1-3 but never after a backbone's last stage:
1-3 of the 4-stage ResNets and DenseNets, 1-2 of the 3-stage CIFAR ones. The official module's
`eps` is unused by its computation and is not an option here.

Random search: DomainBed lacks EFDMix and the official repository publishes no distribution,
so `search_space` is empty.

Deviations from the official code: the coin comes from torch's generator rather than Python's
`random` (so Lightning's seed repeats a run); one layer per position rather than one shared
module (stateless either way); odd crossdomain batches work (see `partner_permutation`); a
batch of one sample is left unchanged. Ties within a row are ranked in the sort's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lightning_modules.methods.style_statistics import (
    StyleLayer,
    StyleStatisticsMethod,
    check_mix,
    check_positive,
    partner_permutation,
    sample_lambda,
)


def efdmix(x: Tensor, lam: Tensor, partners: Tensor) -> Tensor:
    """EFDMix of maps x (B, C, H, W) with weights lam (B,) and partner indices (B,)."""
    rows = x.flatten(2)
    values, order = rows.sort(dim=-1)
    ranks = order.argsort(dim=-1)
    matched = values[partners].gather(-1, ranks)
    weight = (1 - lam).view(-1, 1, 1)
    return (rows + weight * (matched - rows.detach())).view_as(x)


class EFDMixLayer(StyleLayer):
    """EFDMix after one stage (see the module docstring)."""

    def __init__(self, stage: int, p: float = 0.5, alpha: float = 0.1, mix: str = "random") -> None:
        """Settings.

        Args:
            stage: the backbone stage the layer follows.
            p: probability that a training call mixes.
            alpha: lambda ~ Beta(alpha, alpha).
            mix: 'random' or 'crossdomain' partners.
        """
        super().__init__(p, stage)
        check_positive("alpha", alpha)
        check_mix(mix)
        self.alpha, self.mix = alpha, mix

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(lambda per sample, partner per sample), from torch's default CPU generator."""
        return sample_lambda(batch_size, self.alpha), partner_permutation(batch_size, self.mix)

    def perturb(self, x: Tensor) -> Tensor:
        lam, partners = self.draw(len(x))
        return efdmix(x, lam.to(x.device), partners.to(x.device))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, mix={self.mix}"


class EFDMix(StyleStatisticsMethod):
    """ERM with EFDMix layers after the chosen backbone stages (see the module docstring)."""

    def __init__(
        self,
        stages: Sequence[int] | None = None,
        p: float = 0.5,
        alpha: float = 0.1,
        mix: str = "random",
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            stages: backbone stages to mix after (0: after the stem; 1..N: after stage N); by
                default 1, 2 and 3 but never the backbone's last stage (the official PACS
                script: [1, 2, 3]; its README's general advice: [1, 2]).
            p: probability that a layer mixes a training batch (one coin per layer and call).
            alpha: the mixing weight is lambda ~ Beta(alpha, alpha), one per sample.
            mix: 'random' (any partner) or 'crossdomain' (the batch is ordered by domain and
                each half takes partners from the other half).
        """
        super().__init__(stages)
        EFDMixLayer(0, p, alpha, mix)  # checks the settings before the model is built
        self.p, self.alpha, self.mix = p, alpha, mix

    def default_stages(self, num_stages: int) -> tuple[int, ...]:
        return tuple(range(1, min(3, num_stages - 1) + 1))

    def make_layer(self, stage: int) -> EFDMixLayer:
        return EFDMixLayer(stage, self.p, self.alpha, self.mix)
