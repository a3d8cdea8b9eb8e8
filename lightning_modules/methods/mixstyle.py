"""MixStyle: domain generalisation by mixing instance-level feature statistics (Zhou, Yang,
Qiao, Xiang; ICLR 2021; arXiv:2104.02008). Official code: KaiyangZhou/mixstyle-release and
Dassl.pytorch (`dassl/modeling/ops/mixstyle.py`).

After chosen backbone stages, in training only, each sample's channel-wise style (spatial mean
mu and standard deviation sigma) is replaced by a mix of its own and a partner's:

    mu, sigma = mean_hw(x), sqrt(unbiased var_hw(x) + eps)      both detached
    out = (x - mu) / sigma * (lam sigma + (1 - lam) sigma[pi]) + lam mu + (1 - lam) mu[pi]

with lam ~ Beta(alpha, alpha) per sample and pi the partner permutation: 'random' (any
sample) or 'crossdomain' (the first half of the batch takes partners from the second half and
vice versa, each half shuffled; the method orders the batch by domain first, see
`StyleStatisticsMethod`). One coin per call, for the whole batch, decides whether it acts
(probability p). The statistics are detached: the gradient is that of the formula with mu and
sigma held constant.

Defaults (the official repository's): p=0.5, alpha=0.1, eps=1e-6, mix='random' (Dassl's
default; the paper's crossdomain runs used batch 128 from 2 domains per batch), and the stages
of its ResNet-18 `resnet18_mixstyle_L234_p0d5_a0d1` used for PACS, after layer1, layer2 and
layer3: never after the last stage, where in the paper's ablation mixing hurts (its maps are
closest to the classifier and carry the class information). For Office-Home the paper used
layer1-2 (`stages: [1, 2]`). With `stages` left unset the layers go after stages 1-3 but never
after a backbone's last stage: 1-3 of the 4-stage ResNets and DenseNets, 1-2 of the 3-stage
CIFAR ones. The re-ID code uses alpha=0.3.

Random search (`search_space`): DomainBed lacks MixStyle; the official repository's ablation
grid (its registered `resnet18_mixstyle_L234_p*_a*` backbones) is p in {0.1, ..., 0.7} at
alpha 0.1 and alpha in {0.1, ..., 0.7} at p 0.5.

Deviations from the official code: one layer instance per position rather than one shared
module (the same computation: the layers are stateless and flip one coin per call either way);
the coin comes from torch's generator rather than Python's `random` (so Lightning's seed
repeats a run); odd crossdomain batches work (see `partner_permutation`); a batch of one sample
is left unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from lightning_modules.methods.style_statistics import (
    StyleLayer,
    StyleStatisticsMethod,
    channel_statistics,
    check_mix,
    check_positive,
    partner_permutation,
    sample_lambda,
)


def mixstyle(x: Tensor, lam: Tensor, partners: Tensor, eps: float = 1e-6) -> Tensor:
    """MixStyle of maps x (B, C, H, W) with weights lam (B,) and partner indices (B,)."""
    mean, std = channel_statistics(x, eps)
    mean, std = mean.detach(), std.detach()
    lam = lam.view(-1, 1, 1, 1)
    mixed_mean = lam * mean + (1 - lam) * mean[partners]
    mixed_std = lam * std + (1 - lam) * std[partners]
    return (x - mean) / std * mixed_std + mixed_mean


class MixStyleLayer(StyleLayer):
    """MixStyle after one stage (see the module docstring)."""

    def __init__(
        self, stage: int, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6, mix: str = "random"
    ) -> None:
        """Settings.

        Args:
            stage: the backbone stage the layer follows.
            p: probability that a training call mixes.
            alpha: lambda ~ Beta(alpha, alpha).
            eps: added to the variance before the square root.
            mix: 'random' or 'crossdomain' partners.
        """
        super().__init__(p, stage)
        check_positive("alpha", alpha)
        check_positive("eps", eps)
        check_mix(mix)
        self.alpha, self.eps, self.mix = alpha, eps, mix

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(lambda per sample, partner per sample), from torch's default CPU generator."""
        return sample_lambda(batch_size, self.alpha), partner_permutation(batch_size, self.mix)

    def perturb(self, x: Tensor) -> Tensor:
        lam, partners = self.draw(len(x))
        return mixstyle(x, lam.to(x.device), partners.to(x.device), self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, eps={self.eps}, mix={self.mix}"


class MixStyle(StyleStatisticsMethod):
    """ERM with MixStyle layers after the chosen backbone stages (see the module docstring)."""

    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "p": {"choice": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
        "alpha": {"choice": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
    }

    def __init__(
        self,
        stages: Sequence[int] | None = None,
        p: float = 0.5,
        alpha: float = 0.1,
        eps: float = 1e-6,
        mix: str = "random",
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            stages: backbone stages to mix after (0: after the stem; 1..N: after stage N); by
                default 1, 2 and 3 but never the backbone's last stage (PACS in the paper: [1,
                2, 3]; Office-Home: [1, 2]).
            p: probability that a layer mixes a training batch (one coin per layer and call).
            alpha: the mixing weight is lambda ~ Beta(alpha, alpha), one per sample.
            eps: added to the spatial variance before its square root.
            mix: 'random' (any partner) or 'crossdomain' (the batch is ordered by domain and
                each half takes partners from the other half).
        """
        super().__init__(stages)
        MixStyleLayer(0, p, alpha, eps, mix)  # checks the settings before the model is built
        self.p, self.alpha, self.eps, self.mix = p, alpha, eps, mix

    def default_stages(self, num_stages: int) -> tuple[int, ...]:
        return tuple(range(1, min(3, num_stages - 1) + 1))

    def make_layer(self, stage: int) -> MixStyleLayer:
        return MixStyleLayer(stage, self.p, self.alpha, self.eps, self.mix)
