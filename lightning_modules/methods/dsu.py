"""DSU: domain shifts with uncertainty (Li, Dai, Ge, Liu, Shan, Duan; "Uncertainty Modeling
for Out-of-Distribution Generalization", ICLR 2022; arXiv:2202.03958). Official code:
lixiaotong97/DSU (`DistributionUncertainty`).

After chosen backbone stages, in training only, each sample's channel-wise style is resampled
around its own, with the batch's spread of styles as the uncertainty:

    mu, sigma = mean_hw(x), sqrt(unbiased var_hw(x) + eps)           per (sample, channel)
    Sigma_mu = sqrt(unbiased var_batch(mu) + eps)                     per channel
    Sigma_sigma = sqrt(unbiased var_batch(sigma) + eps)               per channel
    beta = mu + eps_1 Sigma_mu,  gamma = sigma + eps_2 Sigma_sigma,  eps_1, eps_2 ~ N(0, 1)
    out = (x - mu) / sigma * gamma + beta

with fresh noise per (sample, channel). Nothing is detached: the gradient flows through mu,
sigma and the batch variances. One coin per call, for the whole batch, decides whether it acts
(probability p).

Defaults (the official repository's): p=0.5, eps=1e-6, and layers at every stage of the
backbone: the official ResNet-18 has six, after conv1 (before bn1), after the max-pool and
after layer1-4; this project's stage positions offer five of them (0: after the stem's
max-pool, 1..N: after each stage), and DSU takes all five (after the last stage too, as the
official code does). The conv1 position inside the stem is not offered. PACS recipe there: SGD
lr 0.001, cosine, 50 epochs, batch 64.

Random search: DomainBed lacks DSU and the official repository publishes no distribution, so
`search_space` is empty.

Deviations from the official code: the coin and the noise come from torch's default CPU
generator (not numpy's `random` and the device's generator), so Lightning's seed repeats a run
on any device; a batch of one sample (whose batch variance is undefined) is left unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_modules.methods.style_statistics import (
    StyleLayer,
    StyleStatisticsMethod,
    channel_statistics,
    check_positive,
)


def dsu(x: Tensor, noise_mean: Tensor, noise_std: Tensor, eps: float = 1e-6) -> Tensor:
    """DSU of maps x (B, C, H, W) with standard normal noise (B, C) for the mean and the
    standard deviation."""
    mean, std = channel_statistics(x, eps)
    spread_mean = (mean.var(dim=0, keepdim=True) + eps).sqrt()
    spread_std = (std.var(dim=0, keepdim=True) + eps).sqrt()
    shape = mean.shape
    beta = mean + noise_mean.view(shape) * spread_mean
    gamma = std + noise_std.view(shape) * spread_std
    return (x - mean) / std * gamma + beta


class DSULayer(StyleLayer):
    """DSU after one stage (see the module docstring)."""

    def __init__(self, stage: int, p: float = 0.5, eps: float = 1e-6) -> None:
        """Settings.

        Args:
            stage: the backbone stage the layer follows.
            p: probability that a training call perturbs.
            eps: added to the variances before the square roots.
        """
        super().__init__(p, stage)
        check_positive("eps", eps)
        self.eps = eps

    def draw(self, batch_size: int, channels: int) -> tuple[Tensor, Tensor]:
        """(noise of the means, noise of the standard deviations), each (B, C) ~ N(0, 1), from
        torch's default CPU generator."""
        return torch.randn(batch_size, channels), torch.randn(batch_size, channels)

    def perturb(self, x: Tensor) -> Tensor:
        noise_mean, noise_std = self.draw(x.shape[0], x.shape[1])
        return dsu(x, noise_mean.to(x.device), noise_std.to(x.device), self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


class DSU(StyleStatisticsMethod):
    """ERM with DSU layers after the chosen backbone stages (see the module docstring)."""

    def __init__(
        self, stages: Sequence[int] | None = None, p: float = 0.5, eps: float = 1e-6
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            stages: backbone stages to perturb after (0: after the stem; 1..N: after stage N);
                by default all of them, 0 to N, as the official code (which also perturbs
                after conv1, a position not offered here).
            p: probability that a layer perturbs a training batch (one coin per layer and call).
            eps: added to the variances before their square roots.
        """
        super().__init__(stages)
        DSULayer(0, p, eps)  # checks the settings before the model is built
        self.p, self.eps = p, eps

    def default_stages(self, num_stages: int) -> tuple[int, ...]:
        return tuple(range(num_stages + 1))

    def make_layer(self, stage: int) -> DSULayer:
        return DSULayer(stage, self.p, self.eps)
