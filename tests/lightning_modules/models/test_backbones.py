"""The backbone registry: every depth x module, published parameter counts, torchvision parity
and weight loading (random torchvision weights saved to tmp_path; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from lightning_modules.models.backbones import (
    BACKBONES,
    LoadReport,
    ResNetBackbone,
    create_backbone,
)
from lightning_modules.models.recalibration import RECALIBRATION_MODULES

IMAGENET_STYLE = ["resnet18", "resnet34", "resnet50", "resnet101"]
CIFAR_STYLE = ["resnet20", "resnet32", "resnet56", "resnet110"]
MODULES = list(RECALIBRATION_MODULES)
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
# Small inputs keep the grid fast on a CPU; 48 px still leaves every ImageNet-style stage with
# more than one position (12/6/3/2), so style pooling and the pooling branches do real work.
IMAGENET_IMAGE_SIZE = 48
CIFAR_IMAGE_SIZE = 32


def parameters_with_classifier(name: str, recalibration: str, options: dict | None = None) -> int:
    """Parameters of the backbone plus a 1000-class linear classifier, as the papers count."""
    # Built on the meta device: shapes only, no memory, no initialisation cost.
    with torch.device("meta"):
        backbone = create_backbone(name, recalibration, recalibration_kwargs=options)
    return sum(p.numel() for p in backbone.parameters()) + backbone.feature_dim * 1000 + 1000


def torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    return getattr(torchvision.models, name)(weights=None).state_dict()


@pytest.fixture(scope="module")
def torchvision_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One randomly initialised torchvision state dict per ImageNet-style depth, as a .pth."""
    folder = tmp_path_factory.mktemp("torchvision_weights")
    paths = {}
    for name in IMAGENET_STYLE:
        paths[name] = folder / f"{name}.pth"
        torch.save(torchvision_state_dict(name), paths[name])
    return paths


def assert_trains(backbone: ResNetBackbone, image_size: int) -> None:
    """Forward (shape, no NaN), then backward: every parameter gets a finite gradient."""
    torch.manual_seed(0)
    features = backbone.train()(torch.randn(2, 3, image_size, image_size))
    assert features.shape == (2, backbone.feature_dim)
    assert torch.isfinite(features).all()
    features.square().mean().backward()
    for parameter_name, parameter in backbone.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("recalibration", MODULES)
@pytest.mark.parametrize("name", CIFAR_STYLE)
def test_cifar_variants_train_with_every_module(name: str, recalibration: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, recalibration, image_size=CIFAR_IMAGE_SIZE)
    assert backbone.feature_dim == 64
    assert_trains(backbone, CIFAR_IMAGE_SIZE)


@pytest.mark.parametrize("recalibration", MODULES)
@pytest.mark.parametrize(
    # ResNet-101 (a second each per module) runs in the slow tier; the 18/34/50 blocks it
    # shares are the same code.
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "resnet101" else n for n in IMAGENET_STYLE],
)
def test_imagenet_variants_load_torchvision_weights_and_train_with_every_module(
    name: str, recalibration: str, torchvision_checkpoints: dict[str, Path]
) -> None:
    # One build per variant serves both checks: weight loading is what ImageNet-style
    # backbones are for, and building a ResNet-101 dominates the cost of the test.
    torch.manual_seed(0)
    backbone = create_backbone(
        name,
        recalibration,
        weights=str(torchvision_checkpoints[name]),
        image_size=IMAGENET_IMAGE_SIZE,
    )
    assert backbone.feature_dim == FEATURE_DIMS[name]
    recalibration_keys = sorted(key for key in backbone.state_dict() if ".recalibration." in key)
    assert backbone.weights_report == LoadReport(
        missing_keys=recalibration_keys, unexpected_keys=[]
    )
    assert bool(recalibration_keys) == (recalibration not in ("none", "ge_minus"))
    loaded = backbone.state_dict()
    saved = torch.load(torchvision_checkpoints[name], weights_only=True, mmap=True)
    for key, value in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert_trains(backbone, IMAGENET_IMAGE_SIZE)


@pytest.mark.parametrize(
    ("name", "recalibration", "expected"),
    [
        ("resnet50", "none", 25_557_032),
        ("resnet50", "se", 28_088_024),
        ("resnet50", "srm", 25_617_448),
        ("resnet101", "none", 44_549_160),
    ],
)
def test_published_parameter_counts_exactly(name: str, recalibration: str, expected: int) -> None:
    assert parameters_with_classifier(name, recalibration) == expected


# The SRM paper's GE rows were measured with the SRM authors' GE (`definition: srm`).
SRM_AUTHORS_GE = {"definition": "srm"}


@pytest.mark.parametrize(
    ("name", "recalibration", "options", "expected_millions"),
    [
        ("resnet50", "ge", SRM_AUTHORS_GE, 31.12),
        ("resnet50", "ge", None, 31.11),  # the GE authors' prototxt: no gather bias
        ("resnet101", "se", None, 49.33),
        ("resnet101", "srm", None, 44.68),
        ("resnet101", "ge", SRM_AUTHORS_GE, 53.58),
    ],
)
def test_published_parameter_counts_approximately(
    name: str, recalibration: str, options: dict | None, expected_millions: float
) -> None:
    millions = parameters_with_classifier(name, recalibration, options) / 1e6
    assert abs(millions - expected_millions) < 0.01


def test_cifar_resnet56_has_the_classic_option_a_size() -> None:
    backbone = create_backbone("resnet56", image_size=32)
    # ResNet-56 with 10 classes: 0.85M parameters, none of them in the shortcuts.
    assert sum(p.numel() for p in backbone.parameters()) + 64 * 10 + 10 == 853_018
    assert not any("downsample" in name for name, _ in backbone.named_parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_plain_backbone_equals_torchvision_with_the_same_weights(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    reference.fc = nn.Identity()
    backbone = create_backbone(name, "none", image_size=64)
    report = backbone.load_state_dict(reference.state_dict(), strict=True)
    assert not report.missing_keys and not report.unexpected_keys
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone.eval()(images), reference.eval()(images))


@pytest.mark.parametrize("block_name", ["resnet18", "resnet50"])
def test_module_sits_after_the_last_bn_before_the_shortcut(block_name: str) -> None:
    backbone = create_backbone(block_name, "srm", image_size=48).eval()
    block = backbone.layer2[0]
    last_bn = block.bn3 if block_name == "resnet50" else block.bn2
    seen = {}
    last_bn.register_forward_hook(lambda module, args, out: seen.update(bn=out.clone()))
    block.recalibration.register_forward_hook(
        lambda module, args, out: seen.update(module_in=args[0].clone(), module_out=out.clone())
    )
    x = torch.randn(2, block.conv1.in_channels, 12, 12)
    out = block(x)
    torch.testing.assert_close(seen["module_in"], seen["bn"])
    torch.testing.assert_close(out, torch.relu(seen["module_out"] + block.downsample(x)))


def test_checkpoint_nested_under_state_dict_loads(
    tmp_path: Path, torchvision_checkpoints: dict[str, Path]
) -> None:
    nested = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "epoch": 3,
            "state_dict": torch.load(torchvision_checkpoints["resnet18"], weights_only=True),
        },
        nested,
    )
    backbone = create_backbone("resnet18", "se", weights=str(nested), image_size=64)
    assert all(".recalibration." in key for key in backbone.weights_report.missing_keys)


def test_weights_of_another_architecture_are_rejected_with_the_keys(
    torchvision_checkpoints: dict[str, Path],
) -> None:
    resnet18_weights = str(torchvision_checkpoints["resnet18"])
    with pytest.raises(ValueError, match=r"do not fit.*missing base-layer keys.*layer1\.0\.conv3"):
        create_backbone("resnet50", "srm", weights=resnet18_weights)
    with pytest.raises(ValueError, match=r"cifar ResNet.*unexpected keys \(42\).*shape mismatches"):
        create_backbone("resnet20", weights=resnet18_weights, image_size=32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone("resnet18", weights="/nonexistent/resnet18.pth")


def test_torchvision_weights_name_reads_the_cache_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=rf"get_dir\(\) = {tmp_path}\) and cannot be downloaded"
    ):
        create_backbone("resnet18", "srm", weights="IMAGENET1K_V1", image_size=64)

    (tmp_path / "checkpoints").mkdir()
    torch.save(torchvision_state_dict("resnet18"), tmp_path / "checkpoints/resnet18-f37072fd.pth")
    for weights in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        backbone = create_backbone("resnet18", "srm", weights=weights, image_size=64)
        assert all(".recalibration." in key for key in backbone.weights_report.missing_keys)

    with pytest.raises(ValueError, match="valid names: IMAGENET1K_V1, DEFAULT"):
        create_backbone("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(ValueError, match="no pretrained weights for 'resnet20'"):
        create_backbone("resnet20", weights="DEFAULT", image_size=32)


def test_global_gather_excite_names_both_sizes_and_the_fix() -> None:
    backbone = create_backbone("resnet18", "ge", image_size=64)
    with pytest.raises(ValueError, match=r"built for 64x64 inputs but got 48x48.*image_size=48"):
        backbone(torch.randn(2, 3, 48, 48))
    limited = create_backbone("resnet18", "ge", image_size=64, recalibration_kwargs={"extent": 4})
    assert limited(torch.randn(2, 3, 48, 48)).shape == (2, 512)


def test_unknown_names_list_the_valid_choices() -> None:
    # The DenseNets follow the ResNets (tests/lightning_modules/models/test_densenet.py).
    assert list(BACKBONES) == IMAGENET_STYLE + CIFAR_STYLE + [
        "densenet121",
        "densenet169",
        "densenet_bc_100",
    ]
    with pytest.raises(ValueError, match=r"'resnet152'.*resnet18, resnet34, .*resnet110"):
        create_backbone("resnet152")
    with pytest.raises(ValueError, match=r"'cbam'.*srm"):
        create_backbone("resnet20", "cbam", image_size=32)


@pytest.mark.parametrize("recalibration", MODULES)
def test_weight_decay_exemptions_follow_the_srm_recipe(recalibration: str) -> None:
    backbone = create_backbone("resnet20", recalibration, image_size=32)
    parameter_names = dict(backbone.named_parameters()).keys()
    recalibration_names = backbone.recalibration_parameter_names()
    assert recalibration_names == {name for name in parameter_names if ".recalibration." in name}
    exempt = backbone.no_weight_decay()
    assert exempt <= recalibration_names
    if recalibration == "srm":
        suffixes = (".cfc.weight", ".bn.weight", ".bn.bias")
        assert exempt == recalibration_names == {n for n in parameter_names if n.endswith(suffixes)}
        assert len(exempt) == 3 * 9
    else:
        assert exempt == set()


def test_recalibration_modules_keep_their_own_initialisation() -> None:
    backbone = create_backbone("resnet20", "srm", image_size=32)
    assert all(
        not parameter.any()
        for name, parameter in backbone.named_parameters()
        if name.endswith("cfc.weight")
    )
