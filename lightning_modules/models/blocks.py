"""Residual blocks with a recalibration module on the residual branch, and the CIFAR shortcut.

The blocks subclass torchvision's, so every base layer keeps torchvision's name and a
torchvision checkpoint loads into them; the module sits after the branch's last batch norm,
before the shortcut is added.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

from lightning_modules.models.recalibration import NoRecalibration, RecalibrationModule

# The blocks' attribute that holds the module (`self.recalibration`): its parameters' state-dict
# keys contain `.recalibration.`, which is how a backbone tells them from the base layers.
RECALIBRATION_ATTRIBUTE = "recalibration"


class RecalibratedBasicBlock(BasicBlock):
    """torchvision's BasicBlock with `conv2 -> bn2 -> recalibration -> + shortcut -> ReLU`."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        recalibration: RecalibrationModule | None = None,
    ) -> None:
        """Build the block.

        Args:
            inplanes: Input channels.
            planes: Output channels (BasicBlock's expansion is 1).
            stride: Stride of the first 3x3 convolution.
            downsample: Shortcut that matches the residual's shape, or None for identity.
            recalibration: Module applied to the residual branch; None means none.
        """
        super().__init__(inplanes, planes, stride, downsample)
        if recalibration is None:
            recalibration = NoRecalibration(planes * self.expansion)
        self.recalibration = recalibration

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to a (B, C, H, W) map."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        # bn2, then the module: one call, so that SRM can fuse the two.
        out = self.recalibration.forward_after_batch_norm(out, self.bn2)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        return self.relu(out)


class RecalibratedBottleneck(Bottleneck):
    """torchvision's Bottleneck (stride in the 3x3) with `bn3 -> recalibration -> + shortcut`."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        recalibration: RecalibrationModule | None = None,
    ) -> None:
        """Build the block.

        Args:
            inplanes: Input channels.
            planes: Bottleneck width; the block outputs `4 * planes` channels.
            stride: Stride of the 3x3 convolution.
            downsample: Shortcut that matches the residual's shape, or None for identity.
            recalibration: Module applied to the residual branch; None means none.
        """
        super().__init__(inplanes, planes, stride, downsample)
        if recalibration is None:
            recalibration = NoRecalibration(planes * self.expansion)
        self.recalibration = recalibration

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to a (B, C, H, W) map."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        # bn3, then the module: one call, so that SRM can fuse the two.
        out = self.recalibration.forward_after_batch_norm(out, self.bn3)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        return self.relu(out)


class ZeroPaddingShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample, then pad the new channels with zeros.

    Parameter-free, as in the classic CIFAR ResNets (ResNet-56: 0.85M parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        """Configure the shortcut.

        Args:
            in_channels: Channels of the block input.
            out_channels: Channels of the block output (>= in_channels).
            stride: Spatial subsampling factor.
        """
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """Subsample (B, C, H, W) by the stride and append zero channels."""
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra_channels))
