"""The one reader of image-list files, used by training and by the data check alike.

An image list has one image per line, `path` or `path label` (the format of DTD's label files and
of domain-adaptation toolkits such as the Transfer-Learning-Library). The rules:
- blank lines and lines starting with `#` are skipped; ` #` (whitespace, then `#`) starts a
  trailing comment;
- fields are separated by any whitespace; the label is the last field, so paths may hold spaces
  (`Real World/Mug/00001.jpg 37`);
- `labels="required"`: every line has a label (a class index or a class name);
  `labels="optional"`: a last field that is an integer is a label, else it is part of the path;
  `labels="none"`: the whole line is the path.
Paths are relative to the list's root; `entry_problem` says when one is absolute or leaves the
root (the data check's rule; DTD's reader applies it to every line).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datamodules.data.layout import DatasetLayoutError

LabelMode = Literal["required", "optional", "none"]
_TRAILING_COMMENT = re.compile(r"\s#.*$")


@dataclass(frozen=True)
class ListEntry:
    """One image line of a list file."""

    line_number: int
    path: str
    label: str | None = None

    def where(self, list_file: str | Path) -> str:
        return f"{list_file}:{self.line_number}"


@dataclass(frozen=True)
class ImageListFile:
    """An image-list file a DataModule reads, as the data check needs to know it.

    Args:
        path: the list file.
        root: the folder its relative paths are resolved against.
        labels: whether its lines carry labels (see the module docstring).
    """

    path: str
    root: str
    labels: LabelMode = "optional"


def parse_line(line: str, labels: LabelMode = "optional") -> tuple[str, str | None] | None:
    """(path, label) of one line; None for blank and comment lines; ValueError if a required
    label is missing."""
    text = _TRAILING_COMMENT.sub("", line).strip()
    if not text or text.startswith("#"):
        return None
    if labels == "none":
        return text, None
    parts = text.rsplit(maxsplit=1)
    if len(parts) == 2 and (labels == "required" or parts[1].lstrip("-").isdigit()):
        return parts[0], parts[1]
    if labels == "required":
        raise ValueError(f"expected `path label`, got {text!r}")
    return text, None


def read_image_list(list_file: str | Path, labels: LabelMode = "optional") -> list[ListEntry]:
    """Every image line of `list_file`; `DatasetLayoutError` naming file and line if one is
    malformed or the file does not exist."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DatasetLayoutError(f"image list {list_file} does not exist")
    entries = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        try:
            parsed = parse_line(line, labels)
        except ValueError as error:
            raise DatasetLayoutError(f"{list_file}:{number}: {error}") from None
        if parsed is not None:
            entries.append(ListEntry(number, *parsed))
    return entries


def entry_problem(path: str, root: str | Path) -> tuple[str, str] | None:
    """(kind, message) when a list path is absolute or resolves outside `root`, else None."""
    root = Path(root).resolve()
    if os.path.isabs(path) or path.startswith("~"):
        return "absolute-path", f"{path!r} is absolute; list paths must be relative to {root}"
    if not (root / path).resolve().is_relative_to(root):
        return "escaping-path", f"{path!r} leaves the dataset root {root}"
    return None
