"""What MixStyle, DSU and EFDMix share: per-(sample, channel) statistics, the partner
permutation, the training-only layer with its coin, and the method that places the layers.

The three are parameter-free layers between backbone stages, active only in training; their
loss is ERM's. Each perturbs a feature map's channel-wise style (mean and standard deviation,
or for EFDMix the whole sorted distribution) per sample, the statistics SRM recalibrates with.

Randomness. Every draw (the coin, lambda, the partner permutation, DSU's noise) comes from
torch's default CPU generator, which Lightning's `seed_everything` seeds, so a seeded run
repeats and the draws do not depend on the device. (MixStyle's and EFDMix's official code draw
the coin with Python's `random`, DSU's with numpy's; lambda and the permutation with torch.)

Mixed precision. Under autocast the maps may arrive in bfloat16 or float16; the statistics and
the perturbation are computed in float32 with autocast off, and the output is returned in the
input's dtype (and memory format).

DDP. Each rank perturbs within its own batch: the per-(sample, channel) statistics do not
depend on the other samples, but partners (MixStyle, EFDMix) come from the rank's own batch and
DSU's batch variances Sigma_mu, Sigma_sigma are those of the rank's batch (not synchronised, as
BatchNorm's are not). Every rank is seeded alike by Lightning, so all ranks draw the same coin,
lambda and permutation at each call, on different images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod

MIX_MODES = ("random", "crossdomain")


def channel_statistics(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(mean, standard deviation) of each (sample, channel) over the spatial positions, shaped
    (B, C, 1, 1); sigma = sqrt(unbiased variance + eps), as in the official MixStyle and DSU."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt()
    return mean, std


def partner_permutation(batch_size: int, mix: str) -> Tensor:
    """Index of each sample's partner (CPU, torch's default generator).

    'random': a random permutation. 'crossdomain' (the official `MixStyle2`/EFDMix code): the
    first half draws its partners from the second half and vice versa, each half shuffled, for
    a batch ordered [domain A | domain B]. With an odd batch the second half is the larger: the
    first half's partners are distinct samples of it, and one second-half sample gets a random
    first-half partner beyond a permutation (the official code fails on odd batches).
    """
    if mix == "random":
        return torch.randperm(batch_size)
    first = batch_size // 2
    second = batch_size - first
    first_partners = first + torch.randperm(second)[:first]
    second_partners = torch.cat([torch.randperm(first), torch.randint(first, (second - first,))])
    return torch.cat([first_partners, second_partners])


def sample_lambda(batch_size: int, alpha: float) -> Tensor:
    """One mixing weight per sample, lambda ~ Beta(alpha, alpha) (CPU, torch's generator)."""
    concentration = torch.tensor(float(alpha))
    return torch.distributions.Beta(concentration, concentration).sample((batch_size,))


def check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"model.init_args.method_kwargs.p={p} must be a probability in [0, 1]")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"model.init_args.method_kwargs.{name}={value} must be > 0")


def check_mix(mix: str) -> None:
    if mix not in MIX_MODES:
        raise ValueError(
            f"model.init_args.method_kwargs.mix={mix!r}; valid choices: {', '.join(MIX_MODES)}"
        )


@torch.compiler.disable
def coin(p: float) -> bool:
    """True with probability p, from torch's CPU generator. Left out of `torch.compile`'s graph:
    traced, the drawn float became a constant that the next call's draw failed to match, so every
    training call recompiled the backbone. Out of the graph the compiler sees a bool, and compiles
    each layer twice at most (acting or not)."""
    return float(torch.rand(())) < p


class StyleLayer(nn.Module):
    """A training-only perturbation of a stage's maps: identity in evaluation, and in training
    unless one coin per call (probability `p`, for the whole batch) says to act.

    Subclasses implement `perturb(x)` on float32 maps (B, C, H, W).
    """

    def __init__(self, p: float, stage: int) -> None:
        """Settings.

        Args:
            p: probability that a training call perturbs the batch.
            stage: the backbone stage the layer follows (named in errors).
        """
        super().__init__()
        check_probability(p)
        self.p = p
        self.stage = stage

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or len(x) < 2:  # one sample has no partner and no batch variance
            return x
        # The coin is drawn first, on the CPU generator; `< p` acts always at p=1, never at 0.
        if not coin(self.p):
            return x
        if x.shape[2] * x.shape[3] < 2:
            raise ValueError(
                f"{type(self).__name__} after stage {self.stage} gets {x.shape[2]}x{x.shape[3]} "
                "maps, which have no spatial statistics; choose earlier stages "
                "(model.init_args.method_kwargs.stages) or larger images"
            )
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.perturb(x.float())
        out = out.to(x.dtype)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def perturb(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"stage={self.stage}, p={self.p}"


class StyleStatisticsMethod(TrainingMethod):
    """ERM with one `StyleLayer` after each of `stages` (0: after the stem; 1..N: after stage
    N), in every ResNet and DenseNet the project builds.

    `stages=None` takes the class's `default_stages(num_stages)`. The layers are built in
    `attach`, once the backbone's number of stages is known. With `mix='crossdomain'` the batch
    is reordered by domain (stable sort by domain index) before the forward pass, so the
    layers' halves hold different domains: with two trained domains in equal numbers, exactly
    [A | B]; with three, the halves split the middle domain (e.g. 16 each of A, B, C: [A, half
    of B | other half of B, C]), and some of B's samples are paired within B. Dassl's
    RandomDomainSampler, which the official crossdomain runs used, draws 2 domains per batch
    (batch_size/2 images of each) instead.
    """

    mix: str = "random"

    def __init__(self, stages: Sequence[int] | None) -> None:
        super().__init__()
        if stages is not None:
            stages = [int(stage) for stage in stages]
            if not stages or len(set(stages)) != len(stages) or min(stages) < 0:
                raise ValueError(
                    f"model.init_args.method_kwargs.stages={stages} must be distinct stage "
                    "numbers >= 0 (0: after the stem, 1..N: after stage N), at least one"
                )
        self.stages = None if stages is None else tuple(sorted(stages))
        self.layers = nn.ModuleDict()

    def default_stages(self, num_stages: int) -> tuple[int, ...]:
        """The stages used when `stages` is not given, for an N-stage backbone."""
        raise NotImplementedError

    def make_layer(self, stage: int) -> StyleLayer:
        raise NotImplementedError

    def attach(self, model: MethodHost) -> None:
        backbone = model.backbone
        num_stages = len(backbone.stage_outputs()) - 1
        stages = self.stages if self.stages is not None else self.default_stages(num_stages)
        missing = [stage for stage in stages if stage > num_stages]
        if missing:
            names = ", ".join(getattr(backbone, "stage_names", ()))
            raise ValueError(
                f"model.init_args.method_kwargs.stages={list(stages)}: stage {missing[0]} does "
                f"not exist in this {num_stages}-stage backbone ({names}); valid stages: 0 "
                f"(after the stem) to {num_stages}"
            )
        # One layer per position (they hold no state, but each knows its stage for errors).
        self.layers = nn.ModuleDict({str(stage): self.make_layer(stage) for stage in stages})

    def stage_layers(self) -> dict[int, nn.Module]:
        return {int(stage): layer for stage, layer in self.layers.items()}

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        if self.mix == "crossdomain":
            batch = domain_ordered(batch)
        return super().training_loss(model, batch)


def domain_ordered(batch: TrainingBatch) -> TrainingBatch:
    """The batch with its samples stably sorted by domain index (the order within a domain
    kept), the [domain A | domain B] layout crossdomain mixing assumes."""
    order = torch.sort(batch.domains, stable=True).indices
    return TrainingBatch(
        batch.images[order], batch.labels[order], batch.domains[order], batch.target_images
    )
