"""The evaluation figures and tables: sizes that keep 65 class names readable, CSV contents."""

from __future__ import annotations

import csv
import io
import math

import torch

from lightning_modules.callbacks.charts import (
    accuracy_bar_chart,
    confusion_matrix_figure,
    per_class_accuracy_csv,
)


def test_confusion_matrix_grows_with_the_classes_and_labels_every_one() -> None:
    names = [f"class_{i:02d}" for i in range(65)]
    matrix = torch.eye(65, dtype=torch.long) * 3
    matrix[0, 1] = 1
    figure = confusion_matrix_figure(matrix, names, "Art")
    _width, height = figure.get_size_inches()
    assert height >= 0.2 * 65  # about 0.2 inch per class name
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == names
    assert not axes.texts  # no counts written into 65 x 65 cells
    small = confusion_matrix_figure(torch.tensor([[2, 1], [0, 3]]), ["a", "b"], "Art")
    assert len(small.axes[0].texts) == 3  # the non-zero counts


def test_per_class_csv_has_a_row_per_domain_and_class() -> None:
    matrices = {"Art": torch.tensor([[3, 1], [0, 0]]), "Real_World": torch.tensor([[2, 0], [1, 1]])}
    rows = list(csv.DictReader(io.StringIO(per_class_accuracy_csv(matrices, ["cat", "dog"]))))
    assert [(row["domain"], row["class"]) for row in rows] == [
        ("Art", "cat"),
        ("Art", "dog"),
        ("Real_World", "cat"),
        ("Real_World", "dog"),
    ]
    assert float(rows[0]["accuracy"]) == 0.75 and rows[0]["samples"] == "4"
    assert rows[1]["accuracy"] == ""  # no sample of the class: no accuracy, not 0


def test_bar_chart_draws_one_bar_per_group_and_domain() -> None:
    figure = accuracy_bar_chart(
        ["Art", "Real_World"],
        {"none": [0.5, 0.6], "srm": [0.7, math.nan]},
        errors={"none": [0.1, math.nan], "srm": [math.nan, math.nan]},
    )
    axes = figure.axes[0]
    assert len(axes.patches) == 4
    assert [label.get_text() for label in axes.get_xticklabels()] == ["Art", "Real World"]
    assert axes.get_legend() is not None
