"""EvaluationArtifacts: which validation epoch `fit` reports, and the cross-domain heat maps of
the style evaluation, read back from MLflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from lightning_modules.callbacks.artifacts import EvaluationArtifacts
from lightning_modules.style_robustness import StyleRobustness
from lightning_modules.tracking import StylebenchMLFlowLogger


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One store for the module's runs (creating a SQLite store takes seconds); the module's
    tests run in its folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's ./mlruns (the artifacts) goes there
        yield f"sqlite:///{folder / 'mlflow.db'}"


def fit_epochs(
    tracking_uri: str, tmp_path: Path, scores: list[float], kept: set[int], checkpoint
) -> dict:
    """Validate one epoch per score; after each, the checkpoint callback (run after all other
    callbacks, as in Lightning) takes the epochs in `kept` as its new best. Returns the logged
    `evaluation/val/summary.json`."""
    logger = StylebenchMLFlowLogger(tracking_uri=tracking_uri)
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        sanity_checking=False,
        is_global_zero=True,
        loggers=[logger],
        checkpoint_callback=checkpoint,
        callback_metrics={},
        current_epoch=0,
    )
    model = SimpleNamespace(evaluation_results={}, class_names=["cat", "dog"])
    callback = EvaluationArtifacts(confusion_matrices=False)
    callback.setup(trainer, model, "fit")
    for epoch, score in enumerate(scores):
        trainer.current_epoch = epoch
        callback.on_validation_start(trainer, model)
        correct = round(10 * score)
        model.evaluation_results["val"] = {"Art": torch.tensor([[correct, 10 - correct], [0, 0]])}
        trainer.callback_metrics = {"val/acc_mean": torch.tensor(score)}
        callback.on_validation_end(trainer, model)
        if epoch in kept:
            checkpoint.best_model_score = torch.tensor(score)
            checkpoint.best_model_path = f"best-epoch{epoch:03d}.ckpt"
    callback.on_fit_end(trainer, model)
    path = logger.experiment.download_artifacts(
        logger.run_id, "evaluation/val/summary.json", str(tmp_path)
    )
    return json.loads(Path(path).read_text())


def test_fit_reports_the_epoch_the_checkpoint_callback_keeps(
    tracking_uri: str, tmp_path: Path
) -> None:
    # Epoch 3 ties epoch 1: the checkpoint keeps the earlier file, and so does the report.
    checkpoint = ModelCheckpoint(monitor="val/acc_mean", mode="max")
    summary = fit_epochs(
        tracking_uri, tmp_path, [0.5, 0.7, 0.6, 0.7], kept={0, 1}, checkpoint=checkpoint
    )
    assert summary["epoch"] == 1
    assert summary["accuracy"] == {"Art": pytest.approx(0.7)}
    assert summary["acc_mean"] == pytest.approx(0.7)


def test_fit_follows_the_checkpoint_rule_not_its_own(tracking_uri: str, tmp_path: Path) -> None:
    # A checkpoint judging by another metric keeps epoch 2, though its val/acc_mean is lower.
    checkpoint = ModelCheckpoint(monitor="val/loss", mode="min")
    summary = fit_epochs(
        tracking_uri, tmp_path, [0.5, 0.7, 0.6], kept={0, 2}, checkpoint=checkpoint
    )
    assert summary["epoch"] == 2


def test_fit_without_a_monitored_checkpoint_reports_the_last_epoch(
    tracking_uri: str, tmp_path: Path
) -> None:
    summary = fit_epochs(tracking_uri, tmp_path, [0.5, 0.7, 0.6], kept=set(), checkpoint=None)
    assert summary["epoch"] == 2
    assert summary["accuracy"] == {"Art": pytest.approx(0.6)}


def test_setup_names_what_the_model_lacks() -> None:
    with pytest.raises(TypeError, match=r"EvaluationArtifacts needs EvaluatedModel .* class_names"):
        EvaluationArtifacts().setup(None, SimpleNamespace(evaluation_results={}), "fit")


# Product, never evaluated, has an empty confusion matrix: torchmetrics warns about it.
@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_cross_domain_heat_map_per_pass_that_computed_one(
    tracking_uri: str, tmp_path: Path
) -> None:
    logger = StylebenchMLFlowLogger(tracking_uri=tracking_uri)
    style = StyleRobustness(["Art", "Real World", "Product"], ["Art"], num_classes=2)
    model = SimpleNamespace(
        evaluation_results={}, class_names=["cat", "dog"], style_robustness=style
    )
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        sanity_checking=True,
        is_global_zero=True,
        loggers=[logger],
        checkpoint_callback=None,
        callback_metrics={},
        current_epoch=0,
    )
    callback = EvaluationArtifacts(confusion_matrices=False)
    callback.setup(trainer, model, "fit")
    # The one head (Art's) always says class 0: right on Art's two images (class 0), wrong on
    # Real World's (class 1); Product has no images.
    target, domain = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[[1.0, 0.0]]]).expand(4, 1, 2)

    def evaluate(stage: str, shifted: bool) -> None:
        if shifted:
            style.update_shifted(stage, target, target, domain)
        style.update_cross_domain(stage, logits, target, domain)
        style.epoch_end(stage, {"Art": 1.0, "Real World": 1.0})
        hook = callback.on_test_end if stage == "test" else callback.on_validation_end
        hook(trainer, model)

    evaluate("val", shifted=True)  # the sanity check: computed, not logged
    trainer.sanity_checking = False
    evaluate("val", shifted=False)  # epoch 0, style set not due: no new matrix, none logged
    for epoch in (1, 2):
        trainer.current_epoch = epoch
        evaluate("val", shifted=True)
    trainer.state.fn = TrainerFn.TESTING
    evaluate("test", shifted=True)

    client = logger.experiment
    logged = {a.path for a in client.list_artifacts(logger.run_id, "style_robustness")}
    names = ["val_cross_domain_epoch001", "val_cross_domain_epoch002", "test_cross_domain"]
    assert logged == {f"style_robustness/{n}.{e}" for n in names for e in ("png", "json")}
    path = client.download_artifacts(
        logger.run_id, "style_robustness/val_cross_domain_epoch002.json", str(tmp_path)
    )
    assert json.loads(Path(path).read_text()) == {
        "heads": ["Art"],
        "domains": ["Art", "Real World", "Product"],
        "accuracy": [[1.0, 0.0, None]],  # Product: no images
    }
