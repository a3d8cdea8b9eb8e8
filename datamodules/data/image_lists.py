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
Paths are relative to the list's root and must stay inside it once resolved (symlinks
followed), so that a list line such as `../../etc/passwd` is never read; `entry_problem` is that
rule, applied by every reader (extra domains, DTD) and by the data check. An extra domain's
`allow_outside_root: true` lets its list name absolute paths and paths elsewhere on purpose.
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
        allow_outside_root: accept absolute paths and paths resolving outside `root`.
        allow_option: the setting that sets `allow_outside_root`, named in the error when a
            path leaves the root (None: the list has no such setting).
    """

    path: str
    root: str
    labels: LabelMode = "optional"
    allow_outside_root: bool = False
    allow_option: str | None = None


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


def entry_problem(
    path: str,
    root: str | Path,
    allow_outside_root: bool = False,
    allow_option: str | None = None,
) -> tuple[str, str] | None:
    """(kind, message) when a list path is absolute or resolves outside `root`, else None.

    With `allow_outside_root`, every path is accepted. `allow_option` (the setting that allows
    it) is named in the message as the fix for paths that are meant to be elsewhere.
    """
    if allow_outside_root:
        return None
    root = Path(root).resolve()
    fix = f" (set `{allow_option}: true` to allow paths outside it)" if allow_option else ""
    if os.path.isabs(path) or path.startswith("~"):
        return "absolute-path", f"{path!r} is absolute; list paths must be relative to {root}{fix}"
    try:
        resolved = (root / path).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop (RuntimeError before 3.13)
        return "symlink-loop", f"{path!r} cannot be resolved: {error}"
    if not resolved.is_relative_to(root):
        return "escaping-path", f"{path!r} leaves the image root {root}{fix}"
    return None


def identity(path: str) -> str:
    """The resolved path (symlinks followed) that identifies a listed file, for finding the
    same file listed twice; the path itself where it cannot be resolved (a symlink loop)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return path


def resolve_entry(entry: ListEntry, listed: ImageListFile) -> str:
    """The file a list line names: relative paths joined to the list's root (`~` expanded for
    lists allowed outside their root)."""
    path = Path(entry.path).expanduser() if listed.allow_outside_root else Path(entry.path)
    return str(path if path.is_absolute() else Path(listed.root) / path)
