"""ARM-CML: adaptive risk minimisation with a contextual meta-learner (Zhang, Marklund,
Dhawan, Gupta, Levine, Finn; NeurIPS 2021; arXiv:2007.02931), as DomainBed implements it,
with the context network trained as in the paper.

A context network reads the (normalised) images: three 5x5 convolutions 3 -> 64 -> 64 -> 1
(padding 2, with bias), BatchNorm and ReLU after the first two. Its one-channel map is averaged
over a group of images (the group's shared context) and given to the backbone as a fourth input
channel: the backbone's first convolution is rebuilt for 4 input channels, input channel i
taking the (pretrained) weights of channel i % 3 (the context channel starts as a copy of the
red one). ResNets' `conv1` and DenseNets' `features.conv0` are rebuilt; other backbones are
refused.

Groups:
- Training: each domain's images of the batch form one group (DomainBed: 8 images per domain,
  concatenated domain by domain, grouped by 8). The batch may hold its domains in any order.
- Evaluation (and prediction): groups of `support_size` consecutive images of an evaluation
  batch; a batch whose size is not a multiple of `support_size` is one group (DomainBed's
  `predict`, with its evaluation batches of 64 and support size 8). The project's evaluation
  batches are `data.init_args.eval_batch_size` (default: the training `batch_size`) images of
  the split in order: with a multiple of `support_size` (e.g. 64, as DomainBed) every group
  holds `support_size` consecutive images; the last, smaller batch of a split is usually one
  group. A prediction therefore depends on the images it is batched with, as in the paper.
  The project's splits list each domain's images class by class, so with
  `data.init_args.eval_order: listed` (the general default) consecutive images mostly share a
  domain *and a class*, and the context can carry class information that DomainBed's groups
  do not, which flatters ARM's evaluation accuracy. DomainBed evaluates each domain in a seeded
  shuffle: `data.init_args.eval_order: shuffled` does the same (the DomainBed protocol configs,
  e.g. `configs/officehome/domainbed.yaml` and `configs/pacs/leave_one_out.yaml`, set it);
  compare ARM with DomainBed's numbers only with it.

Batch size: DomainBed fixes ARM's batch size to 8 per domain (not searched): set
`data.init_args.batch_size_per_domain: 8` (each batch then holds 8 images of every trained
domain) and `data.init_args.eval_batch_size: 64`.

Deviation from DomainBed (a known bug): DomainBed's ARM builds its Adam in ERM's constructor
over `network` only, so the context network is never trained (it stays at its random
initialisation in [DB] and [DB-2020]). Here, as in the paper, the context network is trained
with the network, in its own parameter group `context_net` (learning-rate multiplier 1, like
the heads: it is trained from scratch). No options are searched in DomainBed.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod


class ContextNet(nn.Module):
    """DomainBed's `networks.ContextNet`: images (B, 3, H, W) -> a context map (B, 1, H, W)."""

    def __init__(self, in_channels: int = 3, hidden: int = 64) -> None:
        """Build the layers.

        Args:
            in_channels: image channels.
            hidden: channels of the two hidden convolutions.
        """
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 5, padding=2),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 5, padding=2),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 5, padding=2),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


def first_convolution(backbone: nn.Module) -> tuple[nn.Module, str]:
    """(the module holding the backbone's first convolution, its attribute name)."""
    if isinstance(getattr(backbone, "conv1", None), nn.Conv2d):
        return backbone, "conv1"
    features = getattr(backbone, "features", None)
    if features is not None and isinstance(getattr(features, "conv0", None), nn.Conv2d):
        return features, "conv0"
    raise ValueError(
        f"method arm adds a context channel to the backbone's first convolution, which it finds "
        f"as `conv1` (ResNets) or `features.conv0` (DenseNets); {type(backbone).__name__} has "
        "neither: choose a ResNet or DenseNet model.init_args.backbone"
    )


def widen_convolution(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of `conv` for `in_channels` inputs, input channel i with the weights of channel
    i % (the original input channels)."""
    wider = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        source = torch.arange(in_channels) % conv.in_channels
        wider.weight.copy_(conv.weight[:, source])
        if conv.bias is not None:
            wider.bias.copy_(conv.bias)
    return wider


def group_mean(maps: Tensor, groups: Tensor) -> Tensor:
    """Each map replaced by the mean of its group's maps (groups: a group id per map)."""
    _, inverse = torch.unique(groups, return_inverse=True)
    sums = maps.new_zeros((int(inverse.max()) + 1, *maps.shape[1:])).index_add_(0, inverse, maps)
    counts = torch.bincount(inverse).to(maps.dtype).view(-1, *([1] * (maps.dim() - 1)))
    return (sums / counts)[inverse]


class ARM(TrainingMethod):
    """ARM-CML: a context channel averaged over groups of images (see the module docstring)."""

    search_space: ClassVar[dict[str, dict[str, list]]] = {}

    def __init__(self, support_size: int = 8) -> None:
        """Settings (each one also a command-line option).

        Args:
            support_size: images per context group in evaluation and prediction (DomainBed: 8,
                its per-domain training batch); a batch whose size is not a multiple of it is
                one group. In training each domain's images of the batch form a group.
        """
        super().__init__()
        if support_size < 1:
            raise ValueError(
                f"model.init_args.method_kwargs.support_size={support_size} must be >= 1"
            )
        self.support_size = support_size
        self.context_net = ContextNet()
        # Domain index of each image while training_loss runs: the training groups.
        self._training_groups: Tensor | None = None

    def attach(self, model: MethodHost) -> None:
        owner, name = first_convolution(model.backbone)
        setattr(owner, name, widen_convolution(getattr(owner, name), 4))

    def parameter_groups(self) -> list[dict]:
        return [
            {
                "name": "context_net",
                "params": list(self.context_net.parameters()),
                "lr_multiplier": 1.0,
            }
        ]

    def groups(self, batch_size: int, device: torch.device) -> Tensor:
        """Evaluation groups: `support_size` consecutive images, or the whole batch."""
        if batch_size % self.support_size == 0:
            return torch.arange(batch_size, device=device) // self.support_size
        return torch.zeros(batch_size, dtype=torch.long, device=device)

    def transform_images(self, model: MethodHost, images: Tensor) -> Tensor:
        """The images with the group-averaged context map as a fourth channel."""
        groups = self._training_groups
        if groups is None or len(groups) != len(images):
            groups = self.groups(len(images), images.device)
        context = group_mean(self.context_net(images), groups)
        return torch.cat([images, context.to(images.dtype)], dim=1)

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        self._training_groups = batch.domains
        try:
            features = model.features(batch.images)
        finally:
            self._training_groups = None
        loss, logits = model.classification_loss(features, batch.labels, batch.domains)
        return MethodOutput(loss, logits, batch.labels)

    def extra_repr(self) -> str:
        return f"support_size={self.support_size}"
