"""AdaIN style transfer (Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive
Instance Normalization", ICCV 2017, arXiv:1703.06868), as used to build Stylized-ImageNet.

The encoder is VGG-19 up to relu4_1 and the decoder its mirror, laid out exactly like
naoto0804/pytorch-AdaIN's `vgg_normalised.pth` and `decoder.pth` (same `nn.Sequential` indices),
so both files load with `strict=True`. Images are RGB floats in [0, 1]: the encoder's first
1x1 convolution holds the normalisation of the converted Caffe model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS_SOURCE = "https://github.com/naoto0804/pytorch-AdaIN/releases"
ENCODER_FILE = "vgg_normalised.pth"
DECODER_FILE = "decoder.pth"

# VGG-19 feature layers after the initial 1x1 conv: channels of each 3x3 conv, "M" = max pool.
_VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
_VGG19_LAYERS += (512, 512, 512, 512)
# The decoder mirrors the encoder up to relu4_1: conv channels, "U" = nearest 2x upsampling.
_DECODER_LAYERS = (256, "U", 256, 256, 256, 128, "U", 128, 64, "U", 64, 3)
# Modules of the full VGG-19 file up to and including relu4_1 (what AdaIN uses).
RELU4_1_DEPTH = 31


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    # Reflection padding (not zero) as in the Torch original: no dark borders in the output.
    return [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3)]


def vgg19_normalised(depth: int | None = RELU4_1_DEPTH) -> nn.Sequential:
    """VGG-19 in the layout of `vgg_normalised.pth`, cut after `depth` modules (None: whole).

    The full layout is built first so that indices match the file's keys; `load_encoder` loads
    the whole file strictly and then cuts.
    """
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    channels = 3
    for item in _VGG19_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [*_conv(channels, item), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers[:depth])


def adain_decoder() -> nn.Sequential:
    """The decoder in the layout of `decoder.pth`: relu4_1 features (512 ch) -> RGB."""
    layers: list[nn.Module] = []
    channels = 512
    for item in _DECODER_LAYERS:
        if item == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        else:
            layers += _conv(channels, item)
            channels = item
            layers.append(nn.ReLU())
    return nn.Sequential(*layers[:-1])  # the output convolution has no ReLU


def channel_mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, ...]:
    """Per-sample, per-channel mean and standard deviation over space, shaped (B, C, 1, 1)."""
    batch, channels = features.shape[:2]
    flat = features.reshape(batch, channels, -1)
    # eps inside the sqrt keeps constant channels (std 0) finite, as in the reference.
    std = (flat.var(dim=2) + eps).sqrt().view(batch, channels, 1, 1)
    return flat.mean(dim=2).view(batch, channels, 1, 1), std


def adaptive_instance_normalization(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """AdaIN: `sigma(style) * (content - mu(content)) / sigma(content) + mu(style)` per channel."""
    content_mean, content_std = channel_mean_std(content)
    style_mean, style_std = channel_mean_std(style)
    return (content - content_mean) / content_std * style_std + style_mean


class AdaINStyleTransfer(nn.Module):
    """Encoder (VGG-19 to relu4_1) + AdaIN + decoder; `forward` = `style_transfer`."""

    def __init__(self, encoder: nn.Sequential | None = None, decoder: nn.Sequential | None = None):
        """Settings (each one also a command-line option).

        Args:
            encoder: VGG-19 up to relu4_1 (default: randomly initialised `vgg19_normalised()`).
            decoder: the matching decoder (default: randomly initialised `adain_decoder()`).
        """
        super().__init__()
        self.encoder = encoder if encoder is not None else vgg19_normalised()
        self.decoder = decoder if decoder is not None else adain_decoder()
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, encoder_path: str | Path, decoder_path: str | Path) -> AdaINStyleTransfer:
        """Load `vgg_normalised.pth` and `decoder.pth`; a missing file is an error saying where
        the files come from."""
        missing_weights_error([encoder_path, decoder_path])
        encoder = vgg19_normalised(depth=None)
        encoder.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
        decoder = adain_decoder()
        decoder.load_state_dict(torch.load(decoder_path, map_location="cpu", weights_only=True))
        return cls(nn.Sequential(*list(encoder)[:RELU4_1_DEPTH]), decoder)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    @torch.no_grad()
    def style_transfer(
        self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0
    ) -> torch.Tensor:
        """Render `content` (B, 3, H, W) in the style of `style` (B or 1, 3, h, w), both in [0, 1].

        `alpha` blends stylized and content features before decoding (1 = full style, as in
        Stylized-ImageNet). Output (B, 3, H', W') in [0, 1]; H', W' are H, W rounded up to a
        multiple of 8 by the encoder's ceil-mode pooling.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1]")
        content_features = self.encode(content)
        style_features = self.encode(style).expand(len(content), -1, -1, -1)
        features = adaptive_instance_normalization(content_features, style_features)
        features = alpha * features + (1.0 - alpha) * content_features
        return self.decoder(features).clamp(0.0, 1.0)

    forward = style_transfer


def missing_weights_error(paths: list[str | Path]) -> None:
    """Raise FileNotFoundError naming the AdaIN weight files that are missing and their source."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"AdaIN weights not found: {', '.join(missing)}. Style transfer needs two files from "
            f"naoto0804/pytorch-AdaIN ({WEIGHTS_SOURCE}): {ENCODER_FILE} (VGG-19 encoder up to "
            f"relu4_1) and {DECODER_FILE} (its decoder). Download them and pass their paths "
            "(--vgg, --decoder); nothing is downloaded automatically."
        )
