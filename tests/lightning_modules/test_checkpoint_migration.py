"""Checkpoints of earlier versions (DANN as `adaptation: dann` with its discriminator at
`discriminator.*`, trained domains as `head_domains`) still evaluate, resume and grow."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_modules.checkpoint_migration import migrate_hparams
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.growth import grow_from_checkpoint


def dann_model() -> MultiDomainClassifier:
    torch.manual_seed(0)
    return MultiDomainClassifier(
        backbone="resnet20",
        recalibration="none",
        num_classes=3,
        domain_names=["Art", "Clipart"],
        trained_domains=["Art"],
        image_size=16,
        method="dann",
        method_kwargs={"weight": 0.5, "hidden_features": 8},
    )


def old_checkpoint(tmp_path: Path) -> tuple[Path, MultiDomainClassifier]:
    """A checkpoint as the earlier version wrote it, from a model with known weights."""
    model = dann_model()
    with torch.no_grad():
        for parameter in model.method.discriminator.parameters():
            parameter.add_(1.0)  # distinct from a freshly built discriminator
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "new.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {
        key.replace("method.discriminator.", "discriminator."): value
        for key, value in checkpoint["state_dict"].items()
    }
    hparams = checkpoint["hyper_parameters"]
    hparams["head_domains"] = hparams.pop("trained_domains")
    hparams.pop("method"), hparams.pop("method_kwargs")
    hparams.update(adaptation="dann", adaptation_weight=0.5, discriminator_hidden_features=8)
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    return old, model


def test_old_hyperparameters_become_todays_settings() -> None:
    assert migrate_hparams(
        {"head_domains": ["A"], "adaptation": "dann", "adaptation_weight": 0.3, "backbone": "x"}
    ) == {
        "trained_domains": ["A"],
        "method": "dann",
        "method_kwargs": {"weight": 0.3},
        "backbone": "x",
    }
    assert migrate_hparams({"adaptation": None, "adaptation_weight": 1.0}) == {}


def test_an_old_dann_checkpoint_loads_for_evaluation_with_its_weights(tmp_path: Path) -> None:
    path, written = old_checkpoint(tmp_path)
    loaded = MultiDomainClassifier.load_trained(str(path))
    assert loaded.hparams.method == "dann" and loaded.method.weight == 0.5
    assert loaded.trained_domains == ["Art"]
    for key, value in written.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_resuming_an_old_checkpoint_restores_the_discriminator(tmp_path: Path) -> None:
    path, written = old_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    model = dann_model()
    model.on_load_checkpoint(checkpoint)  # what Lightning calls before loading the state
    model.load_state_dict(checkpoint["state_dict"])
    for fresh, old in zip(
        model.method.discriminator.parameters(),
        written.method.discriminator.parameters(),
        strict=True,
    ):
        torch.testing.assert_close(fresh, old)


def test_growing_from_an_old_checkpoint_copies_the_discriminator(tmp_path: Path) -> None:
    path, written = old_checkpoint(tmp_path)
    model = dann_model()
    grown = grow_from_checkpoint(model, str(path), "mean")
    assert grown == []
    first = next(model.method.discriminator.parameters())
    torch.testing.assert_close(first, next(written.method.discriminator.parameters()))


def test_growing_from_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.init_from_checkpoint: .*nope\.ckpt"):
        grow_from_checkpoint(dann_model(), str(tmp_path / "nope.ckpt"), "mean")


def ge_checkpoint(tmp_path: Path, definition: str) -> Path:
    torch.manual_seed(0)
    model = MultiDomainClassifier(
        backbone="resnet20",
        recalibration="ge",
        recalibration_kwargs={"extent": 4, "definition": definition},
        num_classes=3,
        image_size=16,
    )
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / f"ge-{definition}.ckpt"
    trainer.save_checkpoint(path)
    if definition == "srm":  # as the earlier version wrote it: biases, no `definition` option
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["hyper_parameters"]["recalibration_kwargs"] = {"extent": 4}
        torch.save(checkpoint, path)
    return path


def test_an_old_gather_excite_checkpoint_is_read_with_its_biased_gathers(tmp_path: Path) -> None:
    loaded = MultiDomainClassifier.load_trained(str(ge_checkpoint(tmp_path, "srm")))
    assert loaded.hparams.recalibration_kwargs == {"extent": 4, "definition": "srm"}
    assert loaded.backbone.layer1[0].recalibration.gather.conv1.bias is not None


def test_resuming_a_gather_excite_checkpoint_of_the_other_definition_names_the_setting(
    tmp_path: Path,
) -> None:
    checkpoint = torch.load(ge_checkpoint(tmp_path, "srm"), weights_only=True)
    model = MultiDomainClassifier(
        backbone="resnet20",
        recalibration="ge",
        recalibration_kwargs={"extent": 4},
        num_classes=3,
        image_size=16,
    )
    with pytest.raises(ValueError, match=r"recalibration_kwargs: \{definition: srm\}"):
        model.on_load_checkpoint(checkpoint)
    # a checkpoint of today's default resumes into today's default
    model.on_load_checkpoint(torch.load(ge_checkpoint(tmp_path, "ge"), weights_only=True))
