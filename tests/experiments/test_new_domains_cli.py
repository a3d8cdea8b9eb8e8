"""New domains end to end through the CLI: a config-only domain in MLflow, a model grown from a
checkpoint, an unseen domain validated, and DANN towards an unlabelled target."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from datamodules.demo import ensure_officehome_demo
from experiments.officehome import main
from lightning_modules.classifier import MultiDomainClassifier
from tests.helpers.cli import tiny_args
from tests.helpers.trees import TINY_DEMO, write_image_list


def extra_domains(*domains: dict) -> list[str]:
    return ["--data.init_args.extra_domains", json.dumps(list(domains))]


@pytest.fixture(scope="module")
def sketch_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new domain in ImageFolder layout: the demo's Clipart images in a folder of their own."""
    cache = tmp_path_factory.mktemp("fit").parent / "demo-cache"
    demo_root = ensure_officehome_demo(cache, **TINY_DEMO)
    return Path(shutil.copytree(demo_root / "Clipart", tmp_path_factory.mktemp("new") / "Sketch"))


def metrics_of(uri: str, cli) -> dict[str, float]:
    return MlflowClient(uri).get_run(cli.trainer.logger.run_id).data.metrics


def test_image_folder_domain_trains_and_is_logged_under_its_name(
    sketch_folder, tmp_path, mlflow_uri
) -> None:
    cli = main(
        [
            "fit",
            *tiny_args(tmp_path, *extra_domains({"name": "Sketch", "root": str(sketch_folder)})),
        ]
    )
    assert list(cli.model.head.heads) == ["Art", "Product", "Sketch"]
    metrics = metrics_of(mlflow_uri, cli)
    assert "val/acc/Sketch" in metrics
    trained = [metrics[f"val/acc/{d}"] for d in ("Art", "Product", "Sketch")]
    assert metrics["val/acc_mean"] == pytest.approx(sum(trained) / 3)


# Slow tier: another fit like the image-folder one above, which stays fast (the list layout
# itself is tested in tests/datamodules/data/test_extra_domains.py).
@pytest.mark.slow
def test_image_list_domain_trains_and_is_logged_under_its_name(
    sketch_folder, tmp_path, mlflow_uri
) -> None:
    list_file = tmp_path / "new camera.txt"
    write_image_list(sketch_folder, list_file, label_as_index=True)
    domain = {"name": "New Camera", "image_list": str(list_file), "image_root": str(sketch_folder)}
    cli = main(["fit", *tiny_args(tmp_path, *extra_domains(domain))])
    # names pass through metric_safe_name, as for Office-Home's "Real World"
    assert "val/acc/New_Camera" in metrics_of(mlflow_uri, cli)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model trained on Art and Product only."""
    tmp_path = tmp_path_factory.mktemp("base")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    try:
        cli = main(["fit", *tiny_args(tmp_path)])
    finally:
        monkeypatch.undo()
    return cli.trainer.checkpoint_callback.best_model_path


@pytest.mark.parametrize("new_head_init", ["mean", "fresh"])
def test_growing_keeps_backbone_and_old_heads_bit_for_bit(base_checkpoint, new_head_init) -> None:
    old = torch.load(base_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    grown = MultiDomainClassifier(
        backbone="resnet20",
        recalibration="srm",
        weights=None,
        num_classes=3,
        domain_names=["Art", "Product", "Sketch"],
        image_size=32,
        init_from_checkpoint=base_checkpoint,
        new_head_init=new_head_init,
    )
    assert grown.grown_heads == ["Sketch"]
    state = grown.state_dict()
    kept = [k for k in old if k.startswith(("backbone.", "head.heads."))]
    assert any(k.startswith("backbone.") for k in kept) and "head.heads.Art.weight" in kept
    for key in kept:
        assert torch.equal(state[key], old[key]), key
    mean_weight = (old["head.heads.Art.weight"] + old["head.heads.Product.weight"]) / 2
    is_mean = torch.allclose(state["head.heads.Sketch.weight"], mean_weight)
    assert is_mean == (new_head_init == "mean")


# Slow tier: a second fit from the base checkpoint (about 15 s); the growing itself stays
# fast (test_growing_keeps_backbone_and_old_heads_bit_for_bit).
@pytest.mark.slow
def test_growing_through_the_cli_trains_the_new_head(
    base_checkpoint, sketch_folder, tmp_path, mlflow_uri
) -> None:
    cli = main(
        [
            "fit",
            *tiny_args(
                tmp_path,
                *extra_domains({"name": "Sketch", "root": str(sketch_folder)}),
                "--model.init_args.init_from_checkpoint",
                base_checkpoint,
            ),
        ]
    )
    assert cli.model.grown_heads == ["Sketch"]
    assert "val/acc/Sketch" in metrics_of(mlflow_uri, cli)


# Slow tier: another fit (about 11 s) from the base checkpoint.
@pytest.mark.slow
def test_an_unseen_domain_validates_with_the_unseen_domain_rule(
    base_checkpoint, sketch_folder, tmp_path, mlflow_uri
) -> None:
    unseen = {"name": "Sketch", "root": str(sketch_folder), "role": "held_out"}
    cli = main(
        ["validate", *tiny_args(tmp_path, *extra_domains(unseen)), "--ckpt_path", base_checkpoint]
    )
    assert list(cli.model.head.heads) == ["Art", "Product"]
    metrics = metrics_of(mlflow_uri, cli)
    assert metrics["val/acc_held_out_mean"] == metrics["val/acc/Sketch"]
    # all of the unseen domain is evaluated: 3 classes x 12 images
    assert cli.model.evaluation_results["val"]["Sketch"].sum().item() == 36


# Slow tier: a DANN fit through the CLI (about 11 s); DANN's update is tested fast in
# tests/lightning_modules/methods/.
@pytest.mark.slow
def test_dann_adapts_to_an_unlabelled_target(tmp_path, mlflow_uri) -> None:
    cli = main(
        [
            "fit",
            *tiny_args(
                tmp_path,
                "--data.init_args.domains",
                "[Art, Clipart]",
                "--data.init_args.target_domains",
                "[Clipart]",
                "--model.init_args.method",
                "dann",
                "--model.init_args.method_kwargs",
                "{hidden_features: 32}",
            ),
        ]
    )
    assert list(cli.model.head.heads) == ["Art"]
    metrics = metrics_of(mlflow_uri, cli)
    assert "train/domain_loss_epoch" in metrics and "val/acc/Clipart" in metrics
    # model selection on source validation only
    assert metrics["val/acc_mean"] == metrics["val/acc/Art"]
    assert cli.trainer.logger.run_id
    tags = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id).data.tags
    assert tags["protocol"] == "Art_to_Clipart"
