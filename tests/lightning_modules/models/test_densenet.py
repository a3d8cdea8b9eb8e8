"""DenseNets: every module in every DenseNet, published parameter counts, torchvision parity and
weight loading (random torchvision weights saved to tmp_path; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.models.backbones import (
    BACKBONES,
    LoadReport,
    create_backbone,
    is_recalibration_key,
)
from lightning_modules.models.densenet import DenseNetBackbone
from lightning_modules.models.pretrained import rename_legacy_densenet_keys
from lightning_modules.models.recalibration import RECALIBRATION_MODULES

MODULES = list(RECALIBRATION_MODULES)
# 32 px leaves DenseNet-121's blocks 8/4/2/1 positions: enough for every module to do real work,
# small enough for a CPU.
IMAGENET_IMAGE_SIZE = 32
CIFAR_IMAGE_SIZE = 32


def legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as torchvision's published DenseNet files store it: dense layers' modules
    named `norm.1` ... `conv.2`, and no `num_batches_tracked` (the files predate it)."""
    renamed = {}
    for key, value in state_dict.items():
        head, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        for name in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            if "denselayer" in head and head.endswith(f".{name}"):
                head = f"{head[: -len(name)]}{name[:-1]}.{name[-1]}"
        renamed[f"{head}.{leaf}"] = value
    return renamed


@pytest.fixture(scope="module")
def densenet121_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised torchvision DenseNet-121's state dict, saved as a .pth."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torchvision_weights") / "densenet121.pth"
    torch.save(torchvision.models.densenet121(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def published_layout_file(densenet121_file: Path) -> Path:
    """The same weights in the layout of torchvision's published DenseNet files."""
    path = densenet121_file.with_name("densenet121_published_layout.pth")
    torch.save(legacy_keys(torch.load(densenet121_file, weights_only=True)), path)
    return path


def parameter_count(name: str, recalibration: str = "none", num_classes: int = 1000) -> int:
    """Parameters of the backbone plus a linear classifier, as the papers count."""
    with torch.device("meta"):
        backbone = create_backbone(name, recalibration, image_size=224)
    features = sum(p.numel() for p in backbone.parameters())
    return features + backbone.feature_dim * num_classes + num_classes


def assert_trains(backbone: DenseNetBackbone, image_size: int) -> None:
    """Forward (shape, no NaN), then backward: every parameter gets a finite gradient."""
    torch.manual_seed(0)
    features = backbone.train()(torch.randn(2, 3, image_size, image_size))
    assert features.shape == (2, backbone.feature_dim)
    assert torch.isfinite(features).all()
    features.square().mean().backward()
    for parameter_name, parameter in backbone.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


def test_densenets_are_registered_after_the_resnets() -> None:
    assert list(BACKBONES)[-3:] == ["densenet121", "densenet169", "densenet_bc_100"]


@pytest.mark.parametrize("name", ["densenet121", "densenet169"])
def test_imagenet_densenets_match_torchvision_names_and_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
    expected = sum(p.numel() for p in reference.parameters())
    assert parameter_count(name) == expected
    assert parameter_count(name) == {"densenet121": 7_978_856, "densenet169": 14_149_480}[name]
    with torch.device("meta"):
        backbone = create_backbone(name)
    reference_keys = {k for k in reference.state_dict() if not k.startswith("classifier.")}
    assert set(backbone.state_dict()) == reference_keys
    assert backbone.feature_dim == reference.classifier.in_features


def test_densenet_bc_100_has_the_papers_size_and_structure() -> None:
    # Huang et al. 2017, Table 2: DenseNet-BC (L=100, k=12), 0.8M parameters.
    assert parameter_count("densenet_bc_100", num_classes=10) == 769_162
    assert round(parameter_count("densenet_bc_100", num_classes=10) / 1e6, 1) == 0.8
    assert parameter_count("densenet_bc_100", num_classes=100) == 800_032
    backbone = create_backbone("densenet_bc_100", image_size=32)
    # Depth L counts the weighted layers: 99 convolutions (stem, 2 per dense layer, one per
    # transition) plus the classifier.
    convolutions = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) + 1 == 100
    assert [len(getattr(backbone.features, name)) for name in backbone.stage_names] == [16] * 3
    assert backbone.features.conv0.out_channels == 2 * 12
    # 24 + 16k = 216 -> 108 -> 300 -> 150 -> 342: bottlenecks of 4k, compression 0.5.
    assert backbone.features.transition1.conv.out_channels == 108
    assert backbone.features.denseblock2.denselayer1.conv1.out_channels == 4 * 12
    assert backbone.feature_dim == 342


@pytest.mark.parametrize("recalibration", MODULES)
def test_densenet_bc_trains_with_every_module(recalibration: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("densenet_bc_100", recalibration, image_size=CIFAR_IMAGE_SIZE)
    modules = backbone.recalibration_modules()
    assert len(modules) == 48
    assert {module.channels for module in modules.values()} == {12}
    assert all(isinstance(m, RECALIBRATION_MODULES[recalibration]) for m in modules.values())
    assert_trains(backbone, CIFAR_IMAGE_SIZE)


@pytest.mark.parametrize("recalibration", MODULES)
def test_densenet121_loads_torchvision_weights_and_trains_with_every_module(
    recalibration: str, densenet121_file: Path
) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(
        "densenet121",
        recalibration,
        weights=str(densenet121_file),
        image_size=IMAGENET_IMAGE_SIZE,
    )
    assert backbone.feature_dim == 1024
    recalibration_keys = sorted(key for key in backbone.state_dict() if is_recalibration_key(key))
    assert backbone.weights_report == LoadReport(
        missing_keys=recalibration_keys, unexpected_keys=[]
    )
    assert bool(recalibration_keys) == (recalibration not in ("none", "ge_minus"))
    loaded = backbone.state_dict()
    saved = torch.load(densenet121_file, weights_only=True)
    for key, value in saved.items():
        if not key.startswith("classifier."):
            assert torch.equal(loaded[key], value), key
    assert len(backbone.recalibration_modules()) == 6 + 12 + 24 + 16
    assert_trains(backbone, IMAGENET_IMAGE_SIZE)


def test_published_layout_loads_with_torchvision_key_renaming(
    densenet121_file: Path, published_layout_file: Path
) -> None:
    published = torch.load(published_layout_file, weights_only=True)
    assert "features.denseblock1.denselayer1.norm.1.weight" in published
    assert rename_legacy_densenet_keys(published).keys() == {
        key
        for key in torch.load(densenet121_file, weights_only=True)
        if not key.endswith("num_batches_tracked")
    }
    backbone = create_backbone("densenet121", "se", weights=str(published_layout_file))
    missing = backbone.weights_report.missing_keys
    assert all(is_recalibration_key(k) or k.endswith("num_batches_tracked") for k in missing)
    assert any(is_recalibration_key(k) for k in missing)
    loaded = backbone.state_dict()
    for key, value in rename_legacy_densenet_keys(published).items():
        if not key.startswith("classifier."):
            assert torch.equal(loaded[key], value), key


def test_plain_densenet121_equals_torchvision_with_the_same_weights(
    published_layout_file: Path,
) -> None:
    # torchvision's own loader renames the published layout's keys the same way.
    reference = torchvision.models.densenet121(weights=None)
    published = torch.load(published_layout_file, weights_only=True)
    report = reference.load_state_dict(rename_legacy_densenet_keys(published), strict=False)
    assert not report.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in report.missing_keys)
    backbone = create_backbone("densenet121", "none", weights=str(published_layout_file))
    assert all(k.endswith("num_batches_tracked") for k in backbone.weights_report.missing_keys)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = reference.eval()(images)
        features = backbone.eval()(images)
    torch.testing.assert_close(reference.classifier(features), logits)
    # Training mode too (batch statistics), from the same random initialisation.
    torch.manual_seed(1)
    reference = torchvision.models.densenet169(weights=None)
    backbone = create_backbone("densenet169", image_size=64)
    state_dict = reference.state_dict()
    backbone.load_state_dict({k: v for k, v in state_dict.items() if "classifier" not in k})
    reference.classifier = nn.Identity()
    torch.testing.assert_close(backbone.train()(images), reference.train()(images))


def test_module_recalibrates_the_new_maps_before_concatenation() -> None:
    backbone = create_backbone("densenet_bc_100", "srm", image_size=32).eval()
    block = backbone.features.denseblock2
    layer = block.denselayer3
    with torch.no_grad():
        layer.recalibration.cfc.weight.normal_()  # a non-trivial gate
    seen = {}
    layer.conv2.register_forward_hook(lambda module, args, out: seen.update(conv2=out.clone()))
    layer.recalibration.register_forward_hook(
        lambda module, args, out: seen.update(module_in=args[0].clone(), module_out=out.clone())
    )
    x = torch.randn(2, block.denselayer1.norm1.num_features, 8, 8)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(seen["module_in"], seen["conv2"])
    assert not torch.allclose(seen["module_out"], seen["module_in"])
    # Layer 3's k maps sit after the input and layers 1-2's maps in the concatenation.
    start = x.shape[1] + 2 * 12
    torch.testing.assert_close(out[:, start : start + 12], seen["module_out"])
    torch.testing.assert_close(out[:, : x.shape[1]], x)


def test_torchvision_weights_name_reads_the_densenet_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, published_layout_file: Path
) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    url = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "checkpoints" / Path(urlparse(url).path).name
    assert cached.name == "densenet121-a639ec97.pth"
    with pytest.raises(FileNotFoundError, match=f"{cached.name} not found"):
        create_backbone("densenet121", "se", weights="IMAGENET1K_V1", image_size=64)
    cached.parent.mkdir()
    cached.write_bytes(published_layout_file.read_bytes())
    for weights in ("IMAGENET1K_V1", "DEFAULT", "DenseNet121_Weights.IMAGENET1K_V1"):
        backbone = create_backbone("densenet121", "se", weights=weights, image_size=64)
        missing = backbone.weights_report.missing_keys
        assert any(is_recalibration_key(k) for k in missing)
        # The published files predate batch norm's `num_batches_tracked` counters.
        assert all(is_recalibration_key(k) or k.endswith("num_batches_tracked") for k in missing)
    with pytest.raises(ValueError, match="no pretrained weights for 'densenet_bc_100'"):
        create_backbone("densenet_bc_100", weights="DEFAULT", image_size=32)


def test_weights_of_another_architecture_are_rejected(densenet121_file: Path) -> None:
    with pytest.raises(ValueError, match=r"imagenet DenseNet \(4 stages, 1664-d.*missing base"):
        create_backbone("densenet169", weights=str(densenet121_file), image_size=64)
    resnet = Path(densenet121_file).with_name("resnet18.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(ValueError, match=r"cifar DenseNet.*unexpected keys"):
        create_backbone("densenet_bc_100", weights=str(resnet), image_size=32)


def test_sizes_that_do_not_fit_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"image_size=16 is too small.*denseblock4"):
        create_backbone("densenet121", image_size=16)
    backbone = create_backbone("densenet_bc_100", "ge", image_size=32)
    with pytest.raises(ValueError, match=r"built for 32x32 inputs but got 16x16.*image_size=16"):
        backbone(torch.randn(2, 3, 16, 16))
    limited = create_backbone(
        "densenet_bc_100", "ge", image_size=32, recalibration_kwargs={"extent": 4}
    )
    assert not limited.tied_to_image_size
    assert limited(torch.randn(2, 3, 16, 16)).shape == (2, 342)
    with pytest.raises(ValueError, match="A cifar DenseNet has 3 dense blocks"):
        DenseNetBackbone((6, 12, 24, 16), 12, 24, "cifar")


@pytest.mark.parametrize("recalibration", MODULES)
def test_weight_decay_exemptions_follow_the_srm_recipe(recalibration: str) -> None:
    backbone = create_backbone("densenet_bc_100", recalibration, image_size=32)
    parameter_names = dict(backbone.named_parameters()).keys()
    recalibration_names = backbone.recalibration_parameter_names()
    assert recalibration_names == {name for name in parameter_names if is_recalibration_key(name)}
    assert bool(recalibration_names) == (recalibration not in ("none", "ge_minus"))
    exempt = backbone.no_weight_decay()
    if recalibration == "srm":
        suffixes = (".cfc.weight", ".bn.weight", ".bn.bias")
        assert exempt == recalibration_names == {n for n in parameter_names if n.endswith(suffixes)}
        assert len(exempt) == 3 * 48
        # SRM's CFC starts at zero: the base-layer initialisation leaves the modules alone.
        assert not any(p.any() for n, p in backbone.named_parameters() if n.endswith("cfc.weight"))
    else:
        assert exempt == set()


def stripes(count: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Noisy horizontal (class 0), vertical (1) or checkerboard (2) stripes, random phase."""
    labels = torch.arange(count) % 3
    rows = torch.arange(size).view(size, 1).expand(size, size)
    columns = rows.t()
    images = []
    for label in labels.tolist():
        phase = int(torch.randint(0, 4, (1,), generator=generator))
        pattern = [rows, columns, rows + columns][label]
        wave = (((pattern + phase) // 2) % 2).float() * 2 - 1
        noise = 0.5 * torch.randn(3, size, size, generator=generator)
        images.append(wave.expand(3, size, size) + noise)
    return torch.stack(images), labels


# Slow tier: a DenseNet fit (about 20 s); the DenseNet's forward, weights and recalibration
# stay in the fast tier.
@pytest.mark.slow
def test_classifier_with_a_densenet_learns_and_groups_its_parameters() -> None:
    torch.manual_seed(0)
    model = MultiDomainClassifier(
        backbone="densenet_bc_100",
        recalibration="srm",
        num_classes=3,
        domain_names=["A"],
        image_size=16,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4),
    )
    optimizer = model.configure_optimizers()
    groups = {group["name"]: group for group in optimizer.param_groups}
    named = dict(model.backbone.named_parameters())
    exempt = {id(p) for p in groups["backbone_no_weight_decay"]["params"]}
    assert exempt == {id(named[name]) for name in model.backbone.no_weight_decay()} != set()

    generator = torch.Generator().manual_seed(0)
    train_images, train_labels = stripes(24, 16, generator)
    test_images, test_labels = stripes(30, 16, generator)
    domains = torch.zeros(24, dtype=torch.long)
    model.train()
    for _ in range(15):
        loss = F.cross_entropy(model(train_images, domains), train_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(test_images, torch.zeros(30, dtype=torch.long)).argmax(1)
    # Chance is 1/3 on held-out images.
    assert (predictions == test_labels).float().mean() >= 0.8
