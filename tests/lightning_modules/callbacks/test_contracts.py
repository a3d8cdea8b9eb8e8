"""The project's model and DataModule satisfy what the callbacks require of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.officehome import OfficeHomeDemoDataModule
from lightning_modules.callbacks.contracts import (
    BadImageReporting,
    CueConflictData,
    CueConflictModel,
    DomainHeads,
    EvaluatedModel,
    protocol_members,
    require,
)
from lightning_modules.classifier import MultiDomainClassifier


def test_classifier_and_datamodule_satisfy_the_callback_contracts(tmp_path: Path) -> None:
    model = MultiDomainClassifier(backbone="resnet20", recalibration="none", image_size=32)
    data = OfficeHomeDemoDataModule(cache_dir=str(tmp_path))  # nothing is generated yet
    for obj, protocol in (
        (model, EvaluatedModel),
        (model, CueConflictModel),
        (model.head, DomainHeads),
        (data, CueConflictData),
        (data, BadImageReporting),
    ):
        assert require(obj, protocol, "test") is obj


def test_require_names_every_missing_member() -> None:
    assert protocol_members(BadImageReporting) == ["on_bad_image", "bad_images"]
    with pytest.raises(
        TypeError,
        match=r"^BadImagesCallback needs BadImageReporting \(A DataModule that can skip .*\); "
        r"object lacks on_bad_image, bad_images$",
    ):
        require(object(), BadImageReporting, "BadImagesCallback")
