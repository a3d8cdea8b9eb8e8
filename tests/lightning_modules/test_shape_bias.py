"""Shape bias: the 16-class reduction, the exclusion rule, and a hand-computed example."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.shape_bias import (
    EXCLUDED,
    OTHER,
    SHAPE_HIT,
    TEXTURE_HIT,
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
