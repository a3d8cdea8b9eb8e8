"""AdaIN with randomly initialised weights: statistics transfer, layout of the weight files."""

from __future__ import annotations

import pytest
import torch

from datamodules.data.adain import (
    RELU4_1_DEPTH,
    AdaINStyleTransfer,
    adain_decoder,
    adaptive_instance_normalization,
    channel_mean_std,
    vgg19_normalised,
)


def random_adain() -> AdaINStyleTransfer:
    """Random weights that keep activations alive through 10 ReLU layers (PyTorch's default
    init shrinks them towards zero, which would make the statistics checks vacuous)."""
    torch.manual_seed(0)
    model = AdaINStyleTransfer()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.uniform_(module.bias, 0.0, 0.1)
    return model


def test_adain_features_take_the_style_statistics() -> None:
    model = random_adain()
    content, style = torch.rand(2, 3, 40, 48), torch.rand(1, 3, 32, 32)
    content_features = model.encode(content)
    style_features = model.encode(style)
    stylized = adaptive_instance_normalization(
        content_features, style_features.expand(2, -1, -1, -1)
    )
    mean, std = channel_mean_std(stylized)
    style_mean, style_std = channel_mean_std(style_features)
    assert (style_std > 0.01).float().mean() > 0.5  # non-trivial features
    assert torch.allclose(mean, style_mean.expand_as(mean), atol=1e-4)
    # eps (1e-5 on the variance) dominates channels that are constant (dead ReLUs) in the
    # content or the style, so the std is compared where both vary.
    varying = (channel_mean_std(content_features)[1] > 0.05) & (style_std > 0.05)
    assert varying.float().mean() > 0.3
    expected_std = style_std.expand_as(std)[varying]
    assert torch.allclose(std[varying], expected_std, rtol=1e-2, atol=1e-3)
    # the spatial structure is the content's, only rescaled per channel
    assert not torch.allclose(mean, channel_mean_std(content_features)[0], atol=1e-3)


def test_style_transfer_output_and_alpha_zero_keeps_content_features() -> None:
    model = random_adain()
    content, style = torch.rand(2, 3, 30, 35), torch.rand(1, 3, 24, 24)
    output = model.style_transfer(content, style, alpha=1.0)
    assert output.shape == (2, 3, 32, 40)  # ceil-mode pooling rounds up to multiples of 8
    assert output.min() >= 0.0 and output.max() <= 1.0
    no_style = model.style_transfer(content, style, alpha=0.0)
    assert torch.allclose(no_style, model.decoder(model.encode(content)).clamp(0, 1))
    with pytest.raises(ValueError, match="alpha"):
        model.style_transfer(content, style, alpha=1.5)


def test_weight_files_load_strictly_and_encoder_stops_at_relu4_1(tmp_path) -> None:
    full = vgg19_normalised(depth=None)
    # the keys of naoto0804/pytorch-AdaIN's files: first conv 1x1 3->3, last encoder conv 51
    keys = list(full.state_dict())
    assert keys[:2] == ["0.weight", "0.bias"] and keys[-1] == "51.bias"
    assert full[0].kernel_size == (1, 1) and isinstance(full[1], torch.nn.ReflectionPad2d)
    assert list(adain_decoder().state_dict())[-1] == "28.bias"
    torch.save(full.state_dict(), tmp_path / "vgg_normalised.pth")
    torch.save(adain_decoder().state_dict(), tmp_path / "decoder.pth")
    model = AdaINStyleTransfer.from_files(tmp_path / "vgg_normalised.pth", tmp_path / "decoder.pth")
    assert len(model.encoder) == RELU4_1_DEPTH
    assert model.encode(torch.rand(1, 3, 16, 16)).shape == (1, 512, 2, 2)


def test_missing_weights_say_which_files_and_where_from(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        AdaINStyleTransfer.from_files(tmp_path / "vgg_normalised.pth", tmp_path / "decoder.pth")
    message = str(error.value)
    assert "vgg_normalised.pth" in message and "decoder.pth" in message
    assert "github.com/naoto0804/pytorch-AdaIN/releases" in message
