"""The DomainBed datasets' entry points and configs: every shipped config parses with DomainBed's
settings, `check_data` passes on every demo copy, and a short fit on every demo copy learns
(validation accuracy above chance) with per-domain metrics in MLflow."""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from datamodules.demo.__main__ import main as demo_main
from experiments.check_data import main as check_data
from lightning_modules.names import domain_metric_key

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("pacs", "vlcs", "terra_incognita", "domainnet", "rotated_mnist", "colored_mnist")
MNIST = ("rotated_mnist", "colored_mnist")
#: DomainBed's checkpoint frequency per dataset (its datasets.py CHECKPOINT_FREQ).
CHECKPOINT_FREQ = {"domainnet": 1000, "rotated_mnist": 100, "colored_mnist": 100}
DOMAINS = {
    "pacs": ["art_painting", "cartoon", "photo", "sketch"],
    "vlcs": ["Caltech101", "LabelMe", "SUN09", "VOC2007"],
    "terra_incognita": ["location_100", "location_38", "location_43", "location_46"],
    "domainnet": ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"],
    "rotated_mnist": ["0", "15", "30", "45", "60", "75"],
    "colored_mnist": ["+90%", "+80%", "-90%"],
}


def entry(dataset: str):
    return importlib.import_module(f"experiments.{dataset}").main


def printed_config(dataset: str, *configs: Path) -> dict:
    output = io.StringIO()
    args = ["fit", *(item for config in configs for item in ("--config", str(config)))]
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit_info:
        entry(dataset)([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(output.getvalue())


@pytest.mark.parametrize("dataset", DATASETS)
def test_configs_parse_with_domainbeds_settings(dataset: str) -> None:
    folder = REPO / "configs" / dataset
    assert sorted(p.name for p in folder.glob("*.yaml")) == [
        "demo.yaml",
        "leave_one_out.yaml",
        "multi_domain.yaml",
    ]
    for path in folder.glob("*.yaml"):
        text = path.read_text()
        # the CLI's default logger and the cosine period that follows max_epochs: not repeated
        assert "StylebenchMLFlowLogger" not in text and "T_max" not in text, path
    for name in ("leave_one_out", "multi_domain"):
        config = printed_config(dataset, folder / f"{name}.yaml")
        trainer, data = config["trainer"], config["data"]["init_args"]
        assert trainer["max_steps"] == 5001 and trainer["check_val_every_n_epoch"] is None
        assert trainer["val_check_interval"] == CHECKPOINT_FREQ.get(dataset, 300)
        assert data["val_fraction"] == 0.2
        assert data["batch_size_per_domain"] == (64 if dataset in MNIST else 32)
        model = config["model"]["init_args"]
        assert model["optimizer"]["class_path"] == "torch.optim.Adam"
        assert model["lr_scheduler"] is None
        if dataset not in MNIST:
            assert (model["backbone"], model["weights"]) == ("resnet50", "IMAGENET1K_V1")
            assert model["optimizer"]["init_args"]["lr"] == 5e-5
            assert data["augmentation"]["scale"] == [0.7, 1.0] and data["image_size"] == 224
        held_out = data["held_out_domains"] or []
        assert len(held_out) == (1 if name == "leave_one_out" else 0)
        assert set(held_out) <= set(DOMAINS[dataset])
    overlaid = printed_config(
        dataset, folder / "leave_one_out.yaml", REPO / "configs" / "modules" / "srm.yaml"
    )
    assert overlaid["model"]["init_args"]["recalibration"] == "srm"


def small_demo(dataset: str, cache: Path) -> list[str]:
    """Overrides that shrink a demo config's generated copy (and put it under `cache`)."""
    if dataset in MNIST:
        # enough digits that every environment holds every class (else: empty-class errors)
        sizes = {"train_images": 480, "test_images": 120}
    else:
        sizes = {"images_per_class": 3, "demo_image_size": 32, "image_size": 32}
        sizes["resize_size"] = 32
    sizes["cache_dir"] = cache
    return [
        item for key, value in sizes.items() for item in (f"--data.init_args.{key}", str(value))
    ]


@pytest.mark.parametrize("dataset", DATASETS)
def test_check_data_passes_on_each_demo_copy(dataset: str, tmp_path: Path, capsys) -> None:
    config = str(REPO / "configs" / dataset / "demo.yaml")
    status = check_data(["--config", config, *small_demo(dataset, tmp_path), "--workers", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 errors" in out
    if dataset not in MNIST:
        assert "checked" in out and "checked 0 images" not in out


def test_demo_command_writes_every_copy(tmp_path: Path, capsys) -> None:
    for kind in ("vlcs", "terra_incognita", "domainnet"):
        demo_main([kind, "--root", str(tmp_path / kind), "--images", "2", "--image-size", "32"])
    demo_main(["mnist", "--root", str(tmp_path / "mnist"), "--train-images", "10"])
    out = capsys.readouterr().out
    assert "wrote 40 images" in out  # VLCS: 4 domains x 5 classes x 2
    assert (tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert (tmp_path / "domainnet" / "clipart_train.txt").is_file()


# What each short fit trains on, and chance. The image copies: three of their classes drawn at
# 48 px and trained at 32 px without crops or colour jitter (a dozen epochs of augmentation
# would be needed otherwise), a 30% validation split (enough images to measure), 4 images of
# every trained domain per step; PACS holds out art_painting (its brush strokes hide the small
# shapes). Best val/acc_mean measured (one thread, on a shared two-core machine; about five
# minutes for all six): PACS 0.78, VLCS 0.90, TerraIncognita 0.90, DomainNet 0.69,
# RotatedMNIST 0.81, ColoredMNIST 0.72.
IMAGE_COPY = {
    "demo_classes": 3,
    "images_per_class": 30,
    "demo_image_size": 48,
    "image_size": 32,
    "resize_size": 32,
    "val_fraction": 0.3,
    "batch_size_per_domain": 4,
    "augmentation.scale": "[1.0, 1.0]",
    "augmentation.color_jitter": 0.0,
}
MNIST_DIGITS = {"train_images": 600, "test_images": 150}
FITS = {
    "pacs": (8, {**IMAGE_COPY, "split": "holdout", "held_out_domains": "[art_painting]"}, 1 / 3),
    "vlcs": (8, IMAGE_COPY, 1 / 3),
    "terra_incognita": (8, IMAGE_COPY, 1 / 3),
    "domainnet": (8, IMAGE_COPY, 1 / 3),
    "rotated_mnist": (
        4,
        {"train_images": 600, "test_images": 150, "batch_size_per_domain": 4},
        0.1,
    ),
    "colored_mnist": (3, {"train_images": 600, "test_images": 150}, 0.5),
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_a_short_fit_on_each_demo_copy_learns(
    dataset: str, tmp_path: Path, mlflow_uri: str
) -> None:
    epochs, settings, chance = FITS[dataset]
    overrides = {f"data.init_args.{key}": value for key, value in settings.items()}
    overrides |= {
        "data.init_args.cache_dir": tmp_path / "cache",
        "data.init_args.num_workers": 0,
        "trainer.max_epochs": epochs,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.default_root_dir": tmp_path / "outputs",
    }
    args = ["fit", "--config", str(REPO / "configs" / dataset / "demo.yaml")]
    args += [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    cli = entry(dataset)(args)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(cli.trainer.logger.run_id)
    assert run.data.tags["dataset"] == dataset
    assert client.get_experiment(run.info.experiment_id).name == dataset
    held_out = cli.datamodule.held_out_domains
    assert len(held_out) == 1 and cli.datamodule.domain_names == DOMAINS[dataset]
    for domain in DOMAINS[dataset]:  # every domain, the held-out one included
        assert domain_metric_key("val", domain) in run.data.metrics, sorted(run.data.metrics)
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val/acc_mean")]
    assert len(history) == epochs
    print(f"{dataset}: best val/acc_mean {max(history):.3f} (chance {chance:.3f})")
    assert max(history) > chance + 0.1, history
