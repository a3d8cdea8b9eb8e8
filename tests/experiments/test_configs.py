"""Every shipped config, and every shipped composition of a base config with overlays, parses
and type-checks against the CLI (without training), and an overlay changes only what it says."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.helpers.configs import CONFIG_DIR, ENTRY_POINTS, resolved
from tests.helpers.paths import REPO

MODULES = ("none", "se", "srm", "ge", "mssar")


def shipped_configs() -> list[Path]:
    """The base configs: one folder per dataset (overlays live in modules/, trainer/, ...)."""
    return sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name in ENTRY_POINTS)


def config_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def merged(base: dict, overlay: dict) -> dict:
    """`base` with every value `overlay` sets put in (nested mappings merge, the rest replace)."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def compositions() -> list:
    """(dataset, base, overlays) for every combination the configs and README offer."""
    combos = []
    for base in shipped_configs():
        dataset = base.parent.name
        for module in MODULES:
            combos.append((dataset, base, (CONFIG_DIR / "modules" / f"{module}.yaml",)))
        # DDP over gloo on CPUs is trainer-only: it composes with any base.
        combos.append((dataset, base, (CONFIG_DIR / "trainer" / "ddp_cpu.yaml",)))
    office_home = sorted((CONFIG_DIR / "officehome").glob("*.yaml"))
    for base in office_home:
        # ddp_gpus also balances the batches over Office-Home's four domains.
        overlays = (CONFIG_DIR / "trainer" / "ddp_gpus.yaml",)
        combos.append(("officehome", base, overlays))
        combos.append(("officehome", base, (*overlays, CONFIG_DIR / "modules" / "se.yaml")))
    dann = CONFIG_DIR / "adaptation" / "dann.yaml"
    art_to_clipart = CONFIG_DIR / "officehome" / "art_to_clipart.yaml"
    combos.append(("officehome", art_to_clipart, (dann,)))
    combos.append(("officehome", art_to_clipart, (dann, CONFIG_DIR / "modules" / "none.yaml")))
    # The tests' own shrinking overlays (tests/configs/) on the demos they shrink.
    for dataset in ("officehome", "dtd", "cifar10"):
        tiny = REPO / "tests" / "configs" / f"{dataset}_tiny.yaml"
        combos.append((dataset, CONFIG_DIR / dataset / "demo.yaml", (tiny,)))
    # The backbone overlays on the bases they suit (ImageNet weights / small images).
    backbones = CONFIG_DIR / "backbones"
    combos.append(
        (
            "officehome",
            CONFIG_DIR / "officehome" / "leave_out_art.yaml",
            (backbones / "densenet121.yaml",),
        )
    )
    combos.append(
        ("cifar10", CONFIG_DIR / "cifar10" / "resnet.yaml", (backbones / "densenet_bc_100.yaml",))
    )
    combos.append(
        (
            "dtd",
            CONFIG_DIR / "dtd" / "resnet56.yaml",
            (backbones / "densenet_bc_100.yaml", CONFIG_DIR / "modules" / "se.yaml"),
        )
    )
    # The ablation overlays (module + recalibration_kwargs) on a base config.
    for ablation in sorted((CONFIG_DIR / "ablations").glob("*.yaml")):
        combos.append(("officehome", CONFIG_DIR / "officehome" / "multi_domain.yaml", (ablation,)))
    return [
        pytest.param(
            dataset,
            base,
            overlays,
            id=" + ".join(map(config_id, (base, *overlays))),
            marks=pytest.mark.slow if slow_composition(dataset, overlays) else (),
        )
        for dataset, base, overlays in combos
    ]


def slow_composition(dataset: str, overlays: tuple[Path, ...]) -> bool:
    """Module and DDP overlays on the other datasets' bases go to the slow tier (each is a
    CLI parse of a quarter second, and there are about 150 of them); Office-Home's, the
    ablations, backbones and the tests' own overlays stay in the fast tier."""
    single = len(overlays) == 1 and overlays[0].parent.name in ("modules", "trainer")
    return dataset != "officehome" and single


def overlay_files() -> list[Path]:
    # configs/sweeps/ holds sweep files, not overlays (tests/experiments/sweeps/ checks them).
    skipped = {*ENTRY_POINTS, "sweeps"}
    return sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name not in skipped)


@pytest.mark.parametrize("config", shipped_configs(), ids=config_id)
def test_config_parses_and_validates(config: Path) -> None:
    resolved_config = resolved(config.parent.name, config)
    original = yaml.safe_load(config.read_text())
    assert (
        resolved_config["model"]["init_args"]["backbone"]
        == original["model"]["init_args"]["backbone"]
    )
    assert resolved_config["data"]["class_path"] == original["data"]["class_path"]


@pytest.mark.parametrize(("dataset", "base", "overlays"), compositions())
def test_overlay_changes_what_it_sets_and_keeps_the_rest(
    dataset: str, base: Path, overlays: tuple[Path, ...]
) -> None:
    composed = resolved(dataset, base, *overlays)
    expected = resolved(dataset, base)
    for overlay in overlays:
        expected = merged(expected, yaml.safe_load(overlay.read_text()))
    assert composed == expected


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(
    "base",
    [
        "officehome/multi_domain.yaml",
        "officehome/leave_out_art.yaml",
        "officehome/art_to_clipart.yaml",
        "dtd/resnet50.yaml",
        "dtd/resnet56.yaml",
        "stylized_imagenet/sin.yaml",
        "cifar10/resnet.yaml",
        "cifar100/resnet.yaml",
    ],
)
def test_every_module_composes_with_every_protocol(base: str, module: str) -> None:
    composed = resolved(
        base.split("/")[0], CONFIG_DIR / base, CONFIG_DIR / "modules" / f"{module}.yaml"
    )
    assert composed["model"]["init_args"]["recalibration"] == module
    # the base's recipe survives the overlay
    original = yaml.safe_load((CONFIG_DIR / base).read_text())
    assert composed["trainer"]["max_epochs"] == original["trainer"]["max_epochs"]
    assert (
        composed["model"]["init_args"]["optimizer"]["init_args"]["lr"]
        == original["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    )
    assert (
        composed["data"]["init_args"]["batch_size"] == original["data"]["init_args"]["batch_size"]
    )


def test_dann_overlay_turns_the_source_only_baseline_into_dann() -> None:
    art_to_clipart = CONFIG_DIR / "officehome" / "art_to_clipart.yaml"
    baseline = resolved("officehome", art_to_clipart)["model"]["init_args"]
    dann = resolved("officehome", art_to_clipart, CONFIG_DIR / "adaptation" / "dann.yaml")
    model = dann["model"]["init_args"]
    assert baseline["method"] == "erm"
    assert (model["method"], model["method_kwargs"]["hidden_features"]) == ("dann", 1024)
    assert model["backbone_lr_multiplier"] == 0.1
    assert dann["data"]["init_args"]["target_domains"] == ["Clipart"]


@pytest.mark.parametrize("overlay", sorted((CONFIG_DIR / "trainer").glob("*.yaml")), ids=config_id)
def test_trainer_overlays_compose_with_a_dataset_config(overlay: Path) -> None:
    base = CONFIG_DIR / "officehome" / "multi_domain.yaml"
    composed = resolved("officehome", base, overlay)
    assert composed["trainer"]["strategy"] == "ddp"
    # the dataset config's settings survive the overlay
    assert composed["model"]["init_args"]["recalibration"] == "srm"
    assert composed["data"]["init_args"]["batch_size"] == 64


def test_overlays_set_only_what_they_are_named_for() -> None:
    for module in MODULES:
        overlay = yaml.safe_load((CONFIG_DIR / "modules" / f"{module}.yaml").read_text())
        assert overlay == {"model": {"init_args": {"recalibration": module}}}
    for path in overlay_files():
        assert yaml.safe_load(path.read_text()).keys() <= {"trainer", "model", "data"}, path


def expand_braces(word: str) -> list[str]:
    """`a/{b,c}.yaml` -> [`a/b.yaml`, `a/c.yaml`] (one brace group, as the README writes)."""
    head, brace, rest = word.partition("{")
    if not brace:
        return [word]
    choices, _, tail = rest.partition("}")
    return [f"{head}{choice}{tail}" for choice in choices.split(",")]


def test_config_headers_and_readme_name_existing_config_files() -> None:
    """The commands in every config's header comment and in the README only use config files
    that exist."""
    documents = [*shipped_configs(), *overlay_files(), *CONFIG_DIR.glob("slurm/*.sbatch")]
    documents += [REPO / "README.md", *REPO.glob("experiments/*.py"), *REPO.glob("tests/configs/*")]
    for path in documents:
        for word in path.read_text().split():
            word = word.strip("`'\"(),")
            pattern = "*" in word or "<" in word  # configs/<dataset>/*.yaml names no file
            if word.startswith("configs/") and word.endswith((".yaml", ".sbatch")) and not pattern:
                for name in expand_braces(word):  # configs/modules/{se,srm}.yaml names two
                    assert (REPO / name).is_file(), (path, name)


def test_domainbed_config_has_domainbeds_settings() -> None:
    """configs/officehome/domainbed.yaml is DomainBed's published protocol (ERM on Office-Home,
    commit 7df6f06): see docs/domainbed.md for each value's source."""
    config = resolved("officehome", CONFIG_DIR / "officehome" / "domainbed.yaml")
    trainer, model = config["trainer"], config["model"]["init_args"]
    data = config["data"]["init_args"]
    assert (trainer["max_steps"], trainer["max_epochs"]) == (5001, None)
    assert (trainer["val_check_interval"], trainer["check_val_every_n_epoch"]) == (300, None)
    assert [c["class_path"] for c in trainer["callbacks"]] == [
        "lightning_modules.callbacks.frozen_batchnorm.FreezeBatchNorm"
    ]
    assert config["checkpoint"]["monitor"] == "val/acc_mean"  # training-domain validation
    assert (model["backbone"], model["recalibration"], model["weights"]) == (
        "resnet50",
        "none",
        "IMAGENET1K_V1",
    )
    assert (model["domain_heads"], model["shared_head"], model["method"]) == (False, True, "erm")
    assert model["optimizer"]["class_path"] == "torch.optim.Adam"
    assert model["optimizer"]["init_args"]["lr"] == 5e-5
    assert model["optimizer"]["init_args"]["weight_decay"] == 0.0
    assert (model["lr_scheduler"], model["backbone_lr_multiplier"]) == (None, 1.0)
    assert model["label_smoothing"] == 0.0
    assert (data["batch_size_per_domain"], data["domain_proportions"]) == (32, None)
    assert (data["val_fraction"], data["test_fraction"], data["image_size"]) == (0.2, 0.0, 224)
    assert data["held_out_domains"] == ["Art"]
    augmentation = {k: v for k, v in data["augmentation"].items() if k != "padding"}
    assert augmentation == {
        "crop": "random_resized",
        "scale": [0.7, 1.0],
        "ratio": [0.75, 4 / 3],
        "horizontal_flip": 0.5,
        "vertical_flip": 0.0,
        "rotate_degrees": 0.0,
        "rotate_border": "constant",
        "color_jitter": 0.3,
        "hue": 0.3,
        "color_jitter_p": 1.0,
        "grayscale": 0.1,
        "evaluation": "resize",
    }
    # The demo protocol differs only in scale: data, backbone, steps, cadence and BatchNorm.
    demo = resolved("officehome", CONFIG_DIR / "officehome" / "domainbed_demo.yaml")
    demo_model, demo_data = demo["model"]["init_args"], demo["data"]["init_args"]
    assert demo["data"]["init_args"]["augmentation"] == data["augmentation"]
    same = ("domain_heads", "shared_head", "optimizer", "lr_scheduler", "backbone_lr_multiplier")
    assert {k: demo_model[k] for k in same} == {k: model[k] for k in same}
    assert (demo_model["backbone"], demo_model["weights"]) == ("resnet18", None)
    assert (demo_data["batch_size_per_domain"], demo_data["val_fraction"]) == (32, 0.2)
    assert demo["trainer"]["max_steps"] == 100
