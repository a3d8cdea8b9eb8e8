"""Shape bias: the 16-class reduction, the exclusion rule, a hand-computed example, and the
callback against stand-ins for the model and the DataModule (their contract, not their code)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from lightning_modules.callbacks.shape_bias import (
    EXCLUDED,
    OTHER,
    SHAPE_HIT,
    TEXTURE_HIT,
    ShapeBiasCallback,
    category_output_indices,
    decide,
    imagenet16_mapping,
    reduce_to_categories,
    shape_bias_from_decisions,
)

CATEGORIES = sorted(imagenet16_mapping())


def test_mapping_has_the_16_categories_of_the_reference() -> None:
    mapping = imagenet16_mapping()
    assert (
        len(mapping) == 16 and mapping["knife"] == [499] and mapping["bear"] == [294, 295, 296, 297]
    )
    indices = [i for values in mapping.values() for i in values]
    assert len(indices) == len(set(indices)) and max(indices) < 1000


def test_reduction_uses_the_mean_not_the_sum_over_imagenet_indices() -> None:
    groups = category_output_indices([str(i) for i in range(1000)], CATEGORIES)
    probabilities = torch.zeros(1, 1000)
    # 0.3 on the one knife index beats 0.5 spread over the dog indices by the mean (under
    # 0.005 each), though the dog sum (0.5) is larger.
    probabilities[0, 499] = 0.3
    probabilities[0, groups["dog"]] = 0.5 / len(groups["dog"])
    reduced = reduce_to_categories(probabilities, groups)
    assert CATEGORIES[reduced.argmax(dim=1).item()] == "knife"
    assert reduced[0, CATEGORIES.index("dog")].item() == pytest.approx(0.5 / len(groups["dog"]))


def test_decisions_and_exclusion_rule() -> None:
    assert decide("cat", "cat", "cat") == EXCLUDED  # same shape and texture: never counted
    assert decide("cat", "elephant", "cat") == SHAPE_HIT
    assert decide("cat", "elephant", "elephant") == TEXTURE_HIT
    assert decide("cat", "elephant", "truck") == OTHER


def test_hand_computed_shape_bias() -> None:
    # (shape, texture, predicted): 3 shape hits, 1 texture hit, 2 others, 2 excluded (one of
    # which is "correct" and would inflate the shape count if it were not excluded).
    images = [
        ("cat", "elephant", "cat"),
        ("bear", "clock", "bear"),
        ("knife", "oven", "knife"),
        ("oven", "knife", "knife"),
        ("car", "dog", "truck"),
        ("dog", "car", "bird"),
        ("cat", "cat", "cat"),
        ("dog", "dog", "cat"),
    ]
    decisions = [decide(*image) for image in images]
    assert decisions.count(EXCLUDED) == 2
    assert shape_bias_from_decisions(decisions) == pytest.approx(3 / 4)
    assert math.isnan(shape_bias_from_decisions([OTHER, EXCLUDED]))


def test_model_with_the_categories_as_classes_maps_by_name() -> None:
    classes = [
        "Truck",
        "airplane",
        "Bear",
        *[c for c in CATEGORIES if c not in ("truck", "airplane", "bear")],
    ]
    groups = category_output_indices(classes, CATEGORIES)
    assert groups["truck"] == [0] and groups["airplane"] == [1] and groups["bear"] == [2]
    demo = category_output_indices(["Circle", "Square", "Triangle"], ["Circle", "Triangle"])
    assert demo == {"Circle": [0], "Triangle": [2]}
    with pytest.raises(ValueError, match="cannot map"):
        category_output_indices(["Circle", "Square"], CATEGORIES)


# ----- the callback, against stand-ins for the model and the DataModule ---------------------------
SHAPES = ["circle", "square", "star"]
# (shape, texture) -> predicted class: 3 shape hits, 2 texture hits, 1 other, 3 excluded.
PREDICTIONS = {
    ("circle", "circle"): "square",
    ("circle", "square"): "circle",
    ("circle", "star"): "star",
    ("square", "circle"): "square",
    ("square", "square"): "square",
    ("square", "star"): "circle",
    ("star", "circle"): "star",
    ("star", "square"): "square",
    ("star", "star"): "circle",
}


@dataclass(frozen=True)
class Stimulus:
    path: str
    shape: str
    texture: str


class EncodedPredictions(Dataset):
    """Images whose every pixel is 10 x the index of the class the fake model will predict."""

    def __init__(self, images: list[Stimulus]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        value = 10 * SHAPES.index(PREDICTIONS[image.shape, image.texture])
        return torch.full((3, 4, 4), value, dtype=torch.uint8), index


class FakeCueConflictData:
    """The DataModule side of the contract: stimuli, and normalisation that undoes the x10."""

    def __init__(self) -> None:
        root = Path("/stimuli")
        images = [Stimulus(str(root / s / f"{s}1-{t}1.png"), s, t) for s in SHAPES for t in SHAPES]
        self.stimuli = SimpleNamespace(
            root=root, categories=SHAPES, images=images, dataset=EncodedPredictions(images)
        )
        self.requests: list[dict] = []

    def cue_conflict_set(self, **settings) -> SimpleNamespace:
        self.requests.append(settings)
        return self.stimuli

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, *rest = batch
        return (images.float() / 10, *rest)


class ClosestClassHeads(nn.Module):
    """Logits peaking at the class index the features encode; records which head was used."""

    def __init__(self) -> None:
        super().__init__()
        self.used: list[str] = []

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return -(torch.arange(len(SHAPES))[None] - features[:, None]).abs() * 10

    def forward(self, features: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        self.used.append(f"domain {sorted(set(domain_index.tolist()))}")
        return self._logits(features)

    def unseen_domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        self.used.append("unseen")
        return self._logits(features)


class FakeModel(nn.Module):
    device = torch.device("cpu")

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(48, 1, bias=False), nn.Flatten(0))
        nn.init.constant_(self.backbone[1].weight, 1 / 48)  # features: the mean pixel
        self.head = ClosestClassHeads()
        self.class_names = [name.capitalize() for name in SHAPES]  # mapped by name
        self.domain_names = ["real", "stylized"]
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float) -> None:
        self.logged[name] = value


def run_test_epoch_end(callback: ShapeBiasCallback, model, datamodule) -> None:
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=True, loggers=[])
    callback.setup(trainer, model, "test")
    callback.on_test_epoch_end(trainer, model)


def test_callback_scores_the_datamodule_stimuli_and_logs_the_counts() -> None:
    data, model = FakeCueConflictData(), FakeModel()
    callback = ShapeBiasCallback(root="/data/cue-conflict", demo_classes=3, batch_size=4)
    run_test_epoch_end(callback, model, data)
    assert data.requests == [
        {
            "root": "/data/cue-conflict",
            "cache_dir": None,
            "demo_classes": 3,
            "demo_images_per_pair": 4,
            "demo_image_size": 96,
        }
    ]
    assert model.logged == {
        "test/shape_bias": pytest.approx(3 / 5),
        "test/cue_conflict_shape": 3.0,
        "test/cue_conflict_texture": 2.0,
        "test/cue_conflict_other": 1.0,
    }
    assert set(model.head.used) == {"unseen"}  # no domain given: an unseen domain
    rows = list(csv.DictReader(io.StringIO(callback.result.to_csv())))
    assert rows[1] == {
        "image": "circle/circle1-square1.png",
        "shape": "circle",
        "texture": "square",
        "predicted": "circle",
        "decision": SHAPE_HIT,
    }
    assert [row["decision"] for row in rows].count(EXCLUDED) == 3


def test_callback_classifies_through_the_chosen_domain_head() -> None:
    model = FakeModel()
    run_test_epoch_end(ShapeBiasCallback(domain="stylized"), model, FakeCueConflictData())
    assert set(model.head.used) == {"domain [1]"}
    with pytest.raises(ValueError, match=r"domain='sketch' is not a domain .*\['real', 'styl"):
        run_test_epoch_end(ShapeBiasCallback(domain="sketch"), model, FakeCueConflictData())


def test_callback_names_what_the_model_or_datamodule_lacks() -> None:
    model = FakeModel()
    del model.head
    with pytest.raises(TypeError, match=r"ShapeBiasCallback needs CueConflictModel .* lacks head$"):
        run_test_epoch_end(ShapeBiasCallback(), model, FakeCueConflictData())
    with pytest.raises(TypeError, match=r"needs CueConflictData .*; object lacks cue_conflict_set"):
        run_test_epoch_end(ShapeBiasCallback(), FakeModel(), object())
