"""MMD: domain generalisation by matching the feature distributions of the training domains
with the maximum mean discrepancy (Li, Pan, Wang, Kot, "Domain Generalization with Adversarial
Feature Learning", CVPR 2018; DomainBed lists no arXiv id), as DomainBed implements it.

The pooled features of every pair of domains should have the same distribution, measured by the
squared MMD with a mixture of Gaussian kernels:

    k(a, b) = sum_gamma exp(-gamma * max(||a - b||^2, 1e-30)),
              gamma in {0.001, 0.01, 0.1, 1, 10, 100, 1000}
    MMD^2(X, Y) = mean K_XX + mean K_YY - 2 mean K_XY   (biased: the diagonals are included)
    loss = mean_d CE_d + mmd_gamma * mean_{i<j} MMD^2(X_i, X_j)     (D(D-1)/2 pairs)

One backbone pass per domain (each domain's BatchNorm statistics are its own, as in DomainBed).

Details of DomainBed (HEAD b93c22a) followed because they change the numbers:
- The squared distances are computed as ||a||^2 + ||b||^2 - 2 a.b (DomainBed's `my_cdist`) and
  clamped at 1e-30 before the kernel, and gamma multiplies the squared distance (no 1/2, no
  bandwidth).
- The paper's adversarial autoencoder (and its Laplace prior on the codes) is not implemented,
  only the MMD term on the backbone's features.
- Defaults / random search: `mmd_gamma` 1 / 10^U(-1,1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_modules.methods.penalties import PairwiseAlignment

#: DomainBed's kernel widths, each multiplying the squared distance.
KERNEL_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """DomainBed's `my_cdist`: ||x_a||^2 + ||y_b||^2 - 2 x_a.y_b, clamped at 1e-30."""
    x_norm = x.pow(2).sum(dim=-1, keepdim=True)
    y_norm = y.pow(2).sum(dim=-1, keepdim=True)
    distances = torch.addmm(y_norm.transpose(-2, -1), x, y.transpose(-2, -1), alpha=-2)
    return (distances + x_norm).clamp_min(1e-30)


def gaussian_kernel(x: Tensor, y: Tensor, gammas: tuple[float, ...] = KERNEL_GAMMAS) -> Tensor:
    """The sum of exp(-gamma * squared distance) over the gammas, (len(x), len(y))."""
    distances = squared_distances(x, y)
    return sum(torch.exp(-gamma * distances) for gamma in gammas)


def mmd_distance(x: Tensor, y: Tensor) -> Tensor:
    """The biased estimate of the squared MMD between two samples (diagonals included)."""
    return (
        gaussian_kernel(x, x).mean()
        + gaussian_kernel(y, y).mean()
        - 2 * gaussian_kernel(x, y).mean()
    )


class MMD(PairwiseAlignment):
    """MMD (DomainBed's): mean per-domain cross-entropy plus `mmd_gamma` times the mean, over
    pairs of domains, of the squared MMD of their features under a Gaussian-kernel mixture.

    Logs `train/nll` and `train/penalty`.
    """

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        return mmd_distance(x, y)
