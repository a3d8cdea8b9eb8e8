"""The adaptation overlays (configs/adaptation/{cdan,cdan_e,mcc}.yaml) on the source -> target
config, and the 12-pair sweep (configs/sweeps/officehome_adaptation_pairs.yaml): TLlib's recipe
where it is expressible, the same settings in the sweep as in the overlays, and every pair and
method reaching the command line."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from datamodules.officehome import OfficeHomeDataModule
from experiments.sweeps.spec import load_spec
from experiments.sweeps.trials import fit_arguments
from lightning_modules.cli import ParsedConfig
from tests.helpers.configs import CONFIG_DIR, resolved

ART_TO_CLIPART = CONFIG_DIR / "officehome" / "art_to_clipart.yaml"
SWEEP = CONFIG_DIR / "sweeps" / "officehome_adaptation_pairs.yaml"
OFFICE_HOME = ["Art", "Clipart", "Product", "Real World"]
#: TLlib's Office-Home recipe per overlay: (learning rate, batch size, method options).
TLLIB = {
    "cdan": (0.01, 32, {"entropy": False, "bottleneck_dim": 256, "randomized": False}),
    "cdan_e": (0.01, 32, {"entropy": True, "bottleneck_dim": 256, "randomized": False}),
    "mcc": (0.005, 36, {"temperature": 2.5, "weight": 1.0, "bottleneck_dim": 2048}),
}


def overlay(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "adaptation" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", sorted(TLLIB))
def test_the_overlay_sets_tllibs_recipe_and_keeps_the_pair(name: str) -> None:
    lr, batch_size, kwargs = TLLIB[name]
    composed = resolved("officehome", ART_TO_CLIPART, CONFIG_DIR / "adaptation" / f"{name}.yaml")
    base = resolved("officehome", ART_TO_CLIPART)
    model, data = composed["model"]["init_args"], composed["data"]["init_args"]
    assert model["method"] == name.removesuffix("_e")
    assert kwargs.items() <= model["method_kwargs"].items()
    assert model["optimizer"] == {
        "class_path": "torch.optim.SGD",
        "init_args": model["optimizer"]["init_args"] | {"lr": lr},
    }
    sgd = model["optimizer"]["init_args"]
    assert (sgd["momentum"], sgd["nesterov"], sgd["weight_decay"]) == (0.9, True, 0.001)
    assert model["lr_scheduler"]["class_path"] == "lightning_modules.optimization.InverseDecayLR"
    assert model["lr_scheduler"]["init_args"] | {"last_epoch": -1} == {
        "gamma": 0.001,
        "power": 0.75,
        "last_epoch": -1,
    }
    assert model["backbone_lr_multiplier"] == 0.1
    assert (composed["trainer"]["max_steps"], composed["trainer"]["max_epochs"]) == (30000, -1)
    assert data["batch_size"] == batch_size and data["augmentation"]["color_jitter"] == 0.0
    # the pair, the splits, the backbone and the rest of the augmentation are the base config's
    for key in ("domains", "target_domains", "val_fraction", "image_size", "root"):
        assert data[key] == base["data"]["init_args"][key], key
    assert data["augmentation"]["scale"] == base["data"]["init_args"]["augmentation"]["scale"]
    assert (model["backbone"], model["weights"]) == ("resnet50", "IMAGENET1K_V1")


def test_the_sweep_runs_the_twelve_ordered_pairs_for_four_methods_and_two_modules() -> None:
    spec = load_spec(SWEEP)
    pairs = spec.cases["pair"]
    expected = list(itertools.permutations(OFFICE_HOME, 2))
    found = [
        (case["data.init_args.domains"][0], case["data.init_args.target_domains"][0])
        for case in pairs.values()
    ]
    assert sorted(found) == sorted(expected) and len(pairs) == 12
    for label, case in pairs.items():
        source, target = case["data.init_args.domains"]
        assert case["data.init_args.target_domains"] == [target]
        assert label == f"{source[:2]}2{target[:2]}".replace("Re", "Rw")
    assert list(spec.cases["method"]) == ["erm", "dann", "cdan", "mcc"]
    assert spec.grid == {"model.init_args.recalibration": ["none", "srm"]}
    assert len(spec.trials()) == 12 * 4 * 2


def test_the_sweeps_methods_and_recipe_are_the_overlays() -> None:
    spec = load_spec(SWEEP)
    methods = spec.cases["method"]
    kwargs_key = "model.init_args.method_kwargs"
    for name in ("dann", "cdan", "mcc"):
        settings = overlay(name)["model"]["init_args"]
        assert methods[name]["model.init_args.method"] == settings["method"]
        assert methods[name][kwargs_key] == settings["method_kwargs"], name
    mcc = overlay("mcc")
    assert methods["mcc"]["model.init_args.optimizer.init_args.lr"] == 0.005
    assert methods["mcc"]["data.init_args.batch_size"] == mcc["data"]["init_args"]["batch_size"]
    cdan = overlay("cdan")
    fixed, model = spec.fixed, cdan["model"]["init_args"]
    assert fixed["model.init_args.optimizer"] == model["optimizer"]
    assert fixed["model.init_args.lr_scheduler"] == model["lr_scheduler"]
    assert fixed["model.init_args.backbone_lr_multiplier"] == model["backbone_lr_multiplier"]
    assert fixed["trainer.max_steps"] == cdan["trainer"]["max_steps"]
    assert fixed["trainer.max_epochs"] == cdan["trainer"]["max_epochs"]
    jitter = cdan["data"]["init_args"]["augmentation"]["color_jitter"]
    assert fixed["data.init_args.augmentation.color_jitter"] == jitter
    optimizer = dict(mcc["model"]["init_args"]["optimizer"]["init_args"], lr=0.01)
    assert optimizer == fixed["model.init_args.optimizer"]["init_args"]


def parsed(spec, trial) -> dict:
    return ParsedConfig(OfficeHomeDataModule, fit_arguments(spec, trial)).config


def test_every_pair_and_method_reaches_the_command_line() -> None:
    spec = load_spec(SWEEP)
    trials = spec.trials()
    checked = set()
    for trial in trials:
        pair, method = trial.grid_point["pair"], trial.grid_point["method"]
        module = trial.grid_point["model.init_args.recalibration"]
        # every pair once (with ERM) and every method once (on Ar2Cl), with SRM
        if module != "srm" or (method != "erm" and pair != "Ar2Cl"):
            continue
        config = parsed(spec, trial)
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        case = spec.cases["pair"][pair]
        assert data["domains"] == case["data.init_args.domains"]
        assert data["target_domains"] == case["data.init_args.target_domains"]
        assert (model["method"], model["recalibration"]) == (method, "srm")
        assert model["optimizer"]["init_args"]["nesterov"] is True
        assert model["optimizer"]["init_args"]["lr"] == (0.005 if method == "mcc" else 0.01)
        assert data["batch_size"] == (36 if method == "mcc" else 32)
        assert data["augmentation"]["color_jitter"] == 0.0
        assert config["trainer"]["max_steps"] == 30000
        checked.add((pair, method))
    assert len(checked) == 12 + 3


def test_the_header_quotes_tllibs_table_in_the_pairs_order() -> None:
    header = [line for line in Path(SWEEP).read_text().splitlines() if line.startswith("#")]
    columns = next(line for line in header if "Ar2Cl" in line and "Avg" in line).split()
    pairs = [column for column in columns if "2" in column and column[0].isalpha()]
    assert pairs == list(load_spec(SWEEP).cases["pair"])
    rows = {line.split()[1]: line.split()[2:] for line in header if line.split()[1:2]}
    for method in ("ERM", "DANN", "CDAN", "MCC"):
        values = [float(v) for v in rows[method][1:]]  # after "Origin"
        average, per_pair = values[0], values[1:]
        assert len(per_pair) == 12
        assert sum(per_pair) / 12 == pytest.approx(average, abs=0.1), method
