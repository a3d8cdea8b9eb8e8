"""DenseNet backbones with a recalibration module in every dense layer.

Huang, Liu, van der Maaten and Weinberger, "Densely Connected Convolutional Networks", CVPR 2017
(arXiv:1608.06993). Two layouts:

- ImageNet DenseNet-121 and DenseNet-169 as torchvision builds them (growth rate k = 32,
  bottleneck width bn_size * k = 4k, 64 initial features from a 7x7/2 convolution and a 3x3/2
  max-pool, dense blocks of (6, 12, 24, 16) and (6, 12, 32, 32) layers, compression 0.5
  transitions). Every base layer keeps torchvision's name (`features.conv0`, `features.norm0`,
  `features.denseblock1.denselayer1.norm1/conv1/norm2/conv2`, `features.transition1.norm/conv`,
  `features.norm5`), so a torchvision ImageNet checkpoint loads with only the recalibration
  modules' keys missing. DenseNet-121 has 7,978,856 parameters with the 1000-class classifier.
- CIFAR DenseNet-BC (depth L = 100, growth rate k = 12): a 3x3 convolution with 2k channels,
  three dense blocks of (L - 4) / 6 = 16 bottleneck layers (BN-ReLU-1x1 conv to 4k channels,
  BN-ReLU-3x3 conv to k), compression 0.5 transitions (BN-ReLU-1x1 conv-2x2 average pool).
  0.8M parameters in the paper (769,162 here with a 10-class classifier, 765,732 without it);
  the paper reports 4.51% error on CIFAR-10+ and 22.27% on CIFAR-100+ (standard augmentation).

Where the module sits (the project's reading, not a published rule): a ResNet block recalibrates
its residual branch before the addition; the analogue in a dense layer is its k new feature
maps, after the layer's last convolution (conv2) and before they are concatenated to the block's
running features. So the module has `channels = growth_rate`. This is also the project's
reading of MS-SAR's densely-connected variant: its paper (Wang, Xie, Qiao, Zhang, Zhang and
Yuille, "Multi-Scale Spatially-Asymmetric Recalibration for Image Classification", ECCV 2018,
arXiv:1804.00787) applies the module to densely-connected blocks but has no public code; SE,
SRM and Gather-Excite publish only residual placements.

A backbone returns globally pooled features, `relu(norm5(features))` averaged over positions,
exactly as torchvision's DenseNet before its classifier; the heads live elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_modules.models.blocks import RECALIBRATION_ATTRIBUTE
from lightning_modules.models.recalibrated import RecalibratedBackbone
from lightning_modules.models.recalibration import RecalibrationModule


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling (floor mode, no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


class DenseLayer(nn.Module):
    """One bottleneck dense layer, `BN-ReLU-1x1 conv-BN-ReLU-3x3 conv -> recalibration`.

    Same parameter names as torchvision's dense layer (`norm1`, `conv1`, `norm2`, `conv2`).
    The module follows conv2 directly, so it is called as `module(new_features)`:
    `RecalibrationModule.forward_after_batch_norm` fuses a batch norm that precedes the module,
    and a dense layer has none there (the layers that consume the new features normalise them
    with their own `norm1`, the transitions with `norm`, the end with `norm5`). Because every
    consumer normalises first, a gate acts through how it varies between samples and positions;
    a fixed per-channel scale would be absorbed by those batch norms.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        recalibration: RecalibrationModule,
        drop_rate: float = 0.0,
    ) -> None:
        """Build the layer.

        Args:
            in_channels: Channels of the concatenated features the layer reads.
            growth_rate: New feature maps the layer adds (k).
            bn_size: Bottleneck width as a multiple of k (4 in DenseNet-B/BC).
            recalibration: Module applied to the k new maps before concatenation.
            drop_rate: Dropout on the new maps after the module (0 = none, as torchvision's
                default and the paper's augmented CIFAR runs).
        """
        super().__init__()
        bottleneck_channels = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bottleneck_channels, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        setattr(self, RECALIBRATION_ATTRIBUTE, recalibration)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Map the block's features so far (a list of (B, C_i, H, W)) to k new maps."""
        out = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        out = self.conv2(self.relu2(self.norm2(out)))
        # The module before dropout, so that its gate sees the same maps in training as in eval.
        out = getattr(self, RECALIBRATION_ATTRIBUTE)(out)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """Dense layers `denselayer1..n`, each reading the concatenation of all earlier outputs."""

    def __init__(self, layers: Sequence[DenseLayer]) -> None:
        """Name the layers as torchvision does.

        Args:
            layers: The block's dense layers in order.
        """
        super().__init__({f"denselayer{index}": layer for index, layer in enumerate(layers, 1)})

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C + n * k, H, W): the input and every layer's new maps."""
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Between blocks: BN-ReLU-1x1 conv (compression) - 2x2 average pool (torchvision's names)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Build the transition.

        Args:
            in_channels: Channels of the preceding block's output.
            out_channels: Channels after compression (floor(0.5 * in_channels) here).
        """
        super().__init__(
            OrderedDict(
                norm=nn.BatchNorm2d(in_channels),
                relu=nn.ReLU(inplace=True),
                conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                pool=nn.AvgPool2d(kernel_size=2, stride=2),
            )
        )


class DenseNetBackbone(RecalibratedBackbone):
    """A DenseNet without its classifier: image (B, 3, S, S) -> pooled features (B, feature_dim).

    Offers the interface of `ResNetBackbone` (backbones.py), so the classifier, its heads, its
    weight-decay groups and `experiments.model_summary` work unchanged.

    Attributes:
        feature_dim: Size of the pooled feature vector (channels of `features.norm5`).
        image_size: Input resolution the backbone was built for.
        tied_to_image_size: Whether the modules only accept that resolution (global-extent
            GE-theta and theta-plus); every other module accepts any.
        layout: "imagenet" or "cifar".
        stage_names: Names of the dense blocks in order ("denseblock1", ...).
        growth_rate: k, the new maps per dense layer (the modules' channel count).
        recalibration_name: Name of the module in every dense layer.
        weights_report: What loading pretrained weights reported, or None without weights.
    """

    def __init__(
        self,
        block_config: Sequence[int],
        growth_rate: int,
        num_init_features: int,
        layout: Literal["imagenet", "cifar"] = "imagenet",
        bn_size: int = 4,
        drop_rate: float = 0.0,
        recalibration: str | None = "none",
        image_size: int = 224,
        recalibration_kwargs: Mapping | None = None,
    ) -> None:
        """Build the stem, the dense blocks and transitions, then initialise the base layers.

        Args:
            block_config: Dense layers per block (4 blocks for "imagenet", 3 for "cifar").
            growth_rate: New feature maps per dense layer (k).
            num_init_features: Channels of the stem convolution (64; 2k for DenseNet-BC).
            layout: "imagenet": torchvision's 7x7/2 convolution, batch norm, ReLU and 3x3/2
                max-pool stem. "cifar": a single 3x3 convolution (the paper's CIFAR stem; the
                first dense layer's batch norm follows it).
            bn_size: Bottleneck width of each dense layer as a multiple of k.
            drop_rate: Dropout on every dense layer's new maps (0 = none).
            recalibration: Name of the module in every dense layer (see
                `RECALIBRATION_MODULES`).
            image_size: Input resolution; global-extent GE-theta sizes its kernels from it.
            recalibration_kwargs: Extra constructor arguments of the module.
        """
        super().__init__(recalibration, image_size, recalibration_kwargs)
        num_blocks = {"imagenet": 4, "cifar": 3}
        if layout not in num_blocks:
            raise ValueError(f"layout must be 'imagenet' or 'cifar', got {layout!r}.")
        if len(block_config) != num_blocks[layout]:
            raise ValueError(
                f"A {layout} DenseNet has {num_blocks[layout]} dense blocks, got {block_config}."
            )
        self.layout = layout
        self.growth_rate = growth_rate

        if layout == "imagenet":
            stem = OrderedDict(
                conv0=nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False),
                norm0=nn.BatchNorm2d(num_init_features),
                relu0=nn.ReLU(inplace=True),
                pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
            feature_size = output_size(output_size(image_size, 7, 2, 3), 3, 2, 1)
        else:
            stem = OrderedDict(conv0=nn.Conv2d(3, num_init_features, 3, padding=1, bias=False))
            feature_size = image_size
        self.features = nn.Sequential(stem)

        channels = num_init_features
        self.stage_names = tuple(f"denseblock{index}" for index in range(1, len(block_config) + 1))
        stages = zip(self.stage_names, block_config, strict=True)
        for index, (name, num_layers) in enumerate(stages, 1):
            if feature_size < 1:
                raise ValueError(
                    f"image_size={image_size} is too small for this DenseNet: the maps vanish "
                    f"before {name}."
                )
            layers = []
            for _ in range(num_layers):
                module = self.create_recalibration_module(growth_rate, feature_size)
                layers.append(DenseLayer(channels, growth_rate, bn_size, module, drop_rate))
                channels += growth_rate
            self.features.add_module(name, DenseBlock(layers))
            if index < len(block_config):
                # Compression 0.5, rounded down as in torchvision.
                self.features.add_module(f"transition{index}", Transition(channels, channels // 2))
                channels //= 2
                feature_size = output_size(feature_size, 2, 2)
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.feature_dim = channels
        self.finish_building()
        self._initialise_base_layers()

    def _initialise_base_layers(self) -> None:
        # torchvision's DenseNet initialisation: He normal (fan-in) convolutions, gamma = 1 and
        # beta = 0. Recalibration modules keep their own (SRM's CFC must start at zero).
        for name, module in self.named_modules():
            if RECALIBRATION_ATTRIBUTE in name.split("."):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stage_outputs(self) -> list[nn.Module]:
        """The stem's last layer, then each dense block (before its transition: the maps at
        the block's resolution, as a ResNet stage's output is)."""
        stem = self.features.pool0 if hasattr(self.features, "pool0") else self.features.conv0
        return [stem, *(getattr(self.features, name) for name in self.stage_names)]

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, S, S) to pooled features (B, feature_dim)."""
        self.check_input_size(x)
        x = F.relu(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def densenet121(**kwargs) -> DenseNetBackbone:
    """DenseNet-121 (torchvision): k = 32, blocks (6, 12, 24, 16), 1024-d features."""
    return DenseNetBackbone((6, 12, 24, 16), 32, 64, "imagenet", **kwargs)


def densenet169(**kwargs) -> DenseNetBackbone:
    """DenseNet-169 (torchvision): k = 32, blocks (6, 12, 32, 32), 1664-d features."""
    return DenseNetBackbone((6, 12, 32, 32), 32, 64, "imagenet", **kwargs)


def densenet_bc_100(**kwargs) -> DenseNetBackbone:
    """CIFAR DenseNet-BC, L = 100, k = 12: blocks (16, 16, 16), 342-d features, 0.8M params."""
    return DenseNetBackbone((16, 16, 16), 12, 24, "cifar", **kwargs)


# The builders backbones.py registers in BACKBONES (it imports this module, never the reverse).
DENSENET_BUILDERS = (densenet121, densenet169, densenet_bc_100)
