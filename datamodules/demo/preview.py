"""Sample grids of generated demo sets: one PNG with a table of images, to look at the data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def first_image(folder: Path, pattern: str) -> np.ndarray | None:
    """The first (by name) file in `folder` matching `pattern` as RGB, or None if none does."""
    files = sorted(folder.glob(pattern))
    return np.asarray(Image.open(files[0]).convert("RGB")) if files else None


def save_grid(
    cells: list[list[np.ndarray | None]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    output: str | Path,
) -> Path:
    """Save a table of images (None: an empty cell) with row and column labels as a PNG.

    Returns:
        The output path (its folder is created if needed).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    rows, columns = len(cells), len(cells[0])
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.5 * columns + 0.8, 1.5 * rows + 0.6), squeeze=False
    )
    for row, (row_cells, row_label) in enumerate(zip(cells, row_labels, strict=True)):
        for column, image in enumerate(row_cells):
            axis = axes[row][column]
            if image is not None:
                axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(column_labels[column], fontsize=8)
            if column == 0:
                axis.set_ylabel(row_label, fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
