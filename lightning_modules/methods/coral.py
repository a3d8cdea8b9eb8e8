"""Deep CORAL: correlation alignment across the training domains (Sun & Saenko, ECCV-W 2016,
arXiv:1607.01719), with DomainBed's penalty.

The pooled features of every pair of domains should have the same mean and covariance:

    penalty(i, j) = mean_k (mu_i - mu_j)_k^2 + mean_kl (C_i - C_j)_kl^2
    C = (X - mu)^T (X - mu) / (n - 1)                      (unbiased covariance)
    loss = mean_d CE_d + mmd_gamma * mean_{i<j} penalty(i, j)     (D(D-1)/2 pairs)

One backbone pass per domain (each domain's BatchNorm statistics are its own, as in DomainBed).

This is DomainBed's penalty (HEAD b93c22a), not the paper's: the paper's CORAL loss is
||C_S - C_T||_F^2 / (4 d^2), covariances only, between one source and one target. DomainBed's
covariance term is ||C_i - C_j||_F^2 / d^2 (4 times the paper's), and it adds the squared
difference of the means, averaged over the d features. The DomainBed form is kept because its
defaults and random search (`mmd_gamma` 1 / 10^U(-1,1)) were tuned for it.
"""

from __future__ import annotations

from torch import Tensor

from lightning_modules.methods.penalties import PairwiseAlignment


def coral_distance(x: Tensor, y: Tensor) -> Tensor:
    """DomainBed's `mmd` with `kernel_type == "mean_cov"`: mean squared difference of the means
    plus mean squared difference of the unbiased covariances."""
    mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    centred_x, centred_y = x - mean_x, y - mean_y
    covariance_x = centred_x.t() @ centred_x / (len(x) - 1)
    covariance_y = centred_y.t() @ centred_y / (len(y) - 1)
    return (mean_x - mean_y).pow(2).mean() + (covariance_x - covariance_y).pow(2).mean()


class CORAL(PairwiseAlignment):
    """CORAL (DomainBed's): mean per-domain cross-entropy plus `mmd_gamma` times the mean, over
    pairs of domains, of the squared differences of their feature means and covariances.

    Logs `train/nll` and `train/penalty`. Each domain needs at least two samples per batch (an
    unbiased covariance).
    """

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        if len(x) < 2 or len(y) < 2:
            raise ValueError(
                "method coral needs at least 2 samples of every domain in a training batch (an "
                f"unbiased covariance); got {len(x)} and {len(y)}. Raise data.init_args.batch_size "
                "or balance the domains with data.init_args.domain_proportions."
            )
        return coral_distance(x, y)
