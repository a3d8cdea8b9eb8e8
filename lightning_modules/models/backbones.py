"""ResNet backbones with a recalibration module in every residual block.

ImageNet-style ResNet-18/34/50/101 keep torchvision's parameter names for every base layer, so a
torchvision checkpoint (a `weights=` enum name from torchvision's cache, or a local file) loads
into any variant and only the recalibration modules' own keys are missing. CIFAR-style
ResNet-20/32/56/110 (He et al. 2016, section 4.2) use three stages of 16/32/64 channels for
from-scratch training on small images. A backbone returns globally pooled features; the
classifier heads live elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import conv1x1, conv3x3

from lightning_modules.models.blocks import (
    RECALIBRATION_ATTRIBUTE,
    RecalibratedBasicBlock,
    RecalibratedBottleneck,
    ZeroPaddingShortcut,
)
from lightning_modules.models.densenet import DENSENET_BUILDERS, DenseNetBackbone
from lightning_modules.models.pretrained import read_state_dict
from lightning_modules.models.recalibrated import RecalibratedBackbone, is_recalibration_key


@dataclass(frozen=True)
class LoadReport:
    """Which keys a weights file lacked or had in excess, against the backbone's state dict.

    Attributes:
        missing_keys: Backbone keys absent from the file (the recalibration modules' own).
        unexpected_keys: File keys the backbone has no place for (always empty after a
            successful load; torchvision's classifier, `fc.*` (ResNets) or `classifier.*`
            (DenseNets), is dropped before comparing).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


def halved_size(size: int) -> int:
    """Output size of the stride-2 layers used here (7x7 pad 3, 3x3 pad 1, max-pool 3 pad 1)."""
    return (size - 1) // 2 + 1


class ResNetBackbone(RecalibratedBackbone):
    """A ResNet without its classifier: image (B, 3, S, S) -> pooled features (B, feature_dim).

    Attributes:
        feature_dim: Size of the pooled feature vector.
        image_size: Input resolution the backbone was built for.
        tied_to_image_size: Whether the modules only accept that resolution (global-extent
            GE-theta and theta-plus); every other module accepts any.
        layout: "imagenet" or "cifar".
        stage_names: Names of the residual stages in order ("layer1", ...).
        recalibration_name: Name of the module in every block.
        weights_report: What loading pretrained weights reported, or None without weights.
    """

    def __init__(
        self,
        block: type[RecalibratedBasicBlock | RecalibratedBottleneck],
        layers: Sequence[int],
        layout: Literal["imagenet", "cifar"] = "imagenet",
        recalibration: str | None = "none",
        image_size: int = 224,
        recalibration_kwargs: Mapping | None = None,
    ) -> None:
        """Build the stem, the stages and the pooling, then initialise the base layers.

        Args:
            block: Residual block class.
            layers: Number of blocks per stage (4 stages for "imagenet", 3 for "cifar").
            layout: "imagenet": torchvision's 7x7/2 stem, max-pool and stages of 64-512 planes
                with 1x1-conv projection shortcuts. "cifar": a 3x3 stem, no max-pool, stages of
                16/32/64 channels with option-A (zero-padding) shortcuts.
            recalibration: Name of the module in every block (see `RECALIBRATION_MODULES`).
            image_size: Input resolution; global-extent GE-theta sizes its kernels from it.
            recalibration_kwargs: Extra constructor arguments of the module.
        """
        super().__init__(recalibration, image_size, recalibration_kwargs)
        planes_by_layout = {"imagenet": (64, 128, 256, 512), "cifar": (16, 32, 64)}
        if layout not in planes_by_layout:
            raise ValueError(f"layout must be 'imagenet' or 'cifar', got {layout!r}.")
        stage_planes = planes_by_layout[layout]
        if len(layers) != len(stage_planes):
            raise ValueError(f"A {layout} ResNet has {len(stage_planes)} stages, got {layers}.")
        self.layout = layout
        self.inplanes = stage_planes[0]

        if layout == "imagenet":
            self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            feature_size = halved_size(halved_size(image_size))
        else:
            self.conv1 = conv3x3(3, self.inplanes)
            self.maxpool = nn.Identity()
            feature_size = image_size
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)

        self.stage_names = tuple(f"layer{index}" for index in range(1, len(layers) + 1))
        for index, (name, planes, num_blocks) in enumerate(
            zip(self.stage_names, stage_planes, layers, strict=True)
        ):
            stride = 1 if index == 0 else 2
            if stride == 2:
                feature_size = halved_size(feature_size)
            setattr(self, name, self._make_layer(block, planes, num_blocks, stride, feature_size))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = self.inplanes
        self.finish_building()
        self._initialise_base_layers()

    def _make_layer(
        self,
        block: type[RecalibratedBasicBlock | RecalibratedBottleneck],
        planes: int,
        num_blocks: int,
        stride: int,
        feature_size: int,
    ) -> nn.Sequential:
        """One stage, laid out like torchvision's `ResNet._make_layer` (same names)."""
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_channels:
            if self.layout == "cifar":
                downsample = ZeroPaddingShortcut(self.inplanes, out_channels, stride)
            else:
                downsample = nn.Sequential(
                    conv1x1(self.inplanes, out_channels, stride), nn.BatchNorm2d(out_channels)
                )
        blocks = [
            block(
                self.inplanes,
                planes,
                stride,
                downsample,
                self.create_recalibration_module(out_channels, feature_size),
            )
        ]
        self.inplanes = out_channels
        for _ in range(1, num_blocks):
            blocks.append(
                block(
                    self.inplanes,
                    planes,
                    recalibration=self.create_recalibration_module(out_channels, feature_size),
                )
            )
        return nn.Sequential(*blocks)

    def _initialise_base_layers(self) -> None:
        # The recipe's He normal (fan-out) for convolutions, gamma = 1 and beta = 0 for batch
        # norms, as torchvision does. Recalibration modules keep their own initialisation
        # (SRM's CFC must start at zero).
        for name, module in self.named_modules():
            if RECALIBRATION_ATTRIBUTE in name.split("."):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stage_outputs(self) -> list[nn.Module]:
        """The stem's last layer (max-pool; an identity in the CIFAR layout), then the stages."""
        return [self.maxpool, *(getattr(self, name) for name in self.stage_names)]

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, 3, S, S) to pooled features (B, feature_dim)."""
        self.check_input_size(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        for name in self.stage_names:
            x = getattr(self, name)(x)

        x = self.avgpool(x)
        return torch.flatten(x, 1)


# Every registered backbone offers ResNetBackbone's interface (feature_dim, forward to pooled
# features, recalibration_modules, no_weight_decay, weights_report, ...).
Backbone = ResNetBackbone | DenseNetBackbone

BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
    """Register a variant under its function name."""
    BACKBONES[builder.__name__] = builder
    return builder


@register_backbone
def resnet18(**kwargs) -> ResNetBackbone:
    """ResNet-18: BasicBlocks (2, 2, 2, 2), 512-d features."""
    return ResNetBackbone(RecalibratedBasicBlock, (2, 2, 2, 2), "imagenet", **kwargs)


@register_backbone
def resnet34(**kwargs) -> ResNetBackbone:
    """ResNet-34: BasicBlocks (3, 4, 6, 3), 512-d features."""
    return ResNetBackbone(RecalibratedBasicBlock, (3, 4, 6, 3), "imagenet", **kwargs)


@register_backbone
def resnet50(**kwargs) -> ResNetBackbone:
    """ResNet-50: Bottlenecks (3, 4, 6, 3), 2048-d features."""
    return ResNetBackbone(RecalibratedBottleneck, (3, 4, 6, 3), "imagenet", **kwargs)


@register_backbone
def resnet101(**kwargs) -> ResNetBackbone:
    """ResNet-101: Bottlenecks (3, 4, 23, 3), 2048-d features."""
    return ResNetBackbone(RecalibratedBottleneck, (3, 4, 23, 3), "imagenet", **kwargs)


@register_backbone
def resnet20(**kwargs) -> ResNetBackbone:
    """CIFAR ResNet-20: 3 BasicBlocks per stage, 64-d features."""
    return ResNetBackbone(RecalibratedBasicBlock, (3, 3, 3), "cifar", **kwargs)


@register_backbone
def resnet32(**kwargs) -> ResNetBackbone:
    """CIFAR ResNet-32: 5 BasicBlocks per stage, 64-d features."""
    return ResNetBackbone(RecalibratedBasicBlock, (5, 5, 5), "cifar", **kwargs)


@register_backbone
def resnet56(**kwargs) -> ResNetBackbone:
    """CIFAR ResNet-56: 9 BasicBlocks per stage, 64-d features."""
    return ResNetBackbone(RecalibratedBasicBlock, (9, 9, 9), "cifar", **kwargs)


@register_backbone
def resnet110(**kwargs) -> ResNetBackbone:
    """CIFAR ResNet-110: 18 BasicBlocks per stage, 64-d features."""
    return ResNetBackbone(RecalibratedBasicBlock, (18, 18, 18), "cifar", **kwargs)


# DenseNet-121/169 and CIFAR DenseNet-BC-100 (lightning_modules/models/densenet.py).
for _builder in DENSENET_BUILDERS:
    register_backbone(_builder)


def create_backbone(
    name: str,
    recalibration: str | None = "none",
    weights: str | None = None,
    image_size: int = 224,
    recalibration_kwargs: dict | None = None,
) -> Backbone:
    """Build a registered backbone, optionally loading pretrained weights.

    Args:
        name: A key of `BACKBONES` ("resnet18", ..., "resnet110", "densenet121",
            "densenet169", "densenet_bc_100").
        recalibration: Module in every block: "none", "se", "srm", "ge_minus", "ge",
            "ge_plus" or "mssar".
        weights: None for random initialisation; a torchvision weights name ("IMAGENET1K_V1",
            "IMAGENET1K_V2", "DEFAULT") read from torchvision's cache; or the path of a local
            .pth/.pt state dict (raw, or nested under "state_dict" or "model").
        image_size: Input resolution (global-extent GE-theta is tied to it).
        recalibration_kwargs: Extra constructor arguments of the module (e.g. {"extent": 8}).

    Returns:
        The backbone; with weights, `backbone.weights_report` lists the keys that were missing.

    Raises:
        ValueError: Unknown name, or weights that do not fit the architecture.
        FileNotFoundError: A weights file, or a torchvision checkpoint, that is not on disk.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}.")
    backbone = BACKBONES[name](
        recalibration=recalibration,
        image_size=image_size,
        recalibration_kwargs=recalibration_kwargs,
    )
    if weights is not None:
        state_dict, source = read_state_dict(weights, name)
        backbone.weights_report = load_backbone_weights(backbone, state_dict, source)
    return backbone


def load_backbone_weights(
    backbone: Backbone, state_dict: Mapping[str, Tensor], source: str = "state dict"
) -> LoadReport:
    """Load weights non-strictly after checking that they fit the architecture.

    The torchvision classifier (`fc.*`, or a DenseNet's `classifier.*`) is dropped: heads live
    elsewhere. The only keys allowed to be missing are the recalibration modules' own (and
    batch-norm `num_batches_tracked` counters, which old checkpoints lack and which start at 0).

    Args:
        backbone: The backbone to load into; it is left untouched if the weights do not fit.
        state_dict: Parameter and buffer tensors by name.
        source: Where the weights came from, for error messages.

    Returns:
        The keys the weights lacked (sorted) and had in excess (empty).

    Raises:
        ValueError: Naming the keys that do not fit (missing base-layer keys, unexpected keys
            or shape mismatches).
    """
    state_dict = {
        key: value
        for key, value in state_dict.items()
        if not key.startswith(("fc.", "classifier."))
    }
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    missing_base = [
        key
        for key in missing
        if not is_recalibration_key(key) and not key.endswith("num_batches_tracked")
    ]
    mismatched = [
        f"{key}: file {tuple(state_dict[key].shape)}, backbone {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if state_dict[key].shape != expected[key].shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
        for label, keys in (
            ("missing base-layer keys", missing_base),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"Weights from {source} do not fit this {backbone.layout} "
            f"{type(backbone).__name__.removesuffix('Backbone')} "
            f"({len(backbone.stage_names)} stages, {backbone.feature_dim}-d features); check "
            "that the file belongs to the chosen backbone. " + "; ".join(problems)
        )
    backbone.load_state_dict(state_dict, strict=False)
    return LoadReport(missing_keys=missing, unexpected_keys=unexpected)
