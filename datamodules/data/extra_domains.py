"""Domains added to any dataset by configuration (`data.init_args.extra_domains`), and the
registry of domain layouts: ImageFolder folders, image-list files, and readers users register.

An image list is the format of domain-adaptation toolkits (Transfer-Learning-Library, DomainBed
ports): one `path label` line per image, the label a class index or a class name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.data.image_lists import ImageListFile, read_image_list
from datamodules.data.layout import (
    DatasetLayoutError,
    DomainData,
    DomainSource,
    scan_class_folders,
)

#: What a domain is used for: labelled training, evaluation only, or unlabelled adaptation target
#: (trained on without labels, evaluated with them).
DOMAIN_ROLES = ("train", "held_out", "target")


@dataclass
class ExtraDomain:
    """A domain added to a dataset by configuration.

    Args:
        name: the domain's name (its head and its metrics, e.g. `val/acc/<name>`).
        root: a folder in `<root>/<Class>/<image>` layout (ImageFolder); with `image_list`, the
            folder relative paths are resolved against (default: the list file's folder).
        image_list: a file of `path label` lines (label: class index into the dataset's sorted
            class list, or class name); `#` starts a comment (`datamodules.data.image_lists`).
        image_root: folder that relative paths in `image_list` are resolved against (overrides
            `root` for that purpose).
        class_mapping: renames this domain's classes to the dataset's, `{theirs: ours}`; classes
            not named keep their name.
        role: `train` (labelled, gets a head), `held_out` (evaluated only) or `target`
            (unlabelled during training, for adaptation; evaluated with its labels).
        layout: how the domain is read: `auto` (`image_list` if given, else `image_folder`), a
            name registered with `register_domain_layout`, or `package.module:function` (the
            module is imported first, so a reader can live in the user's own code).
    """

    name: str
    root: str | None = None
    image_list: str | None = None
    image_root: str | None = None
    class_mapping: dict[str, str] | None = None
    role: str = "train"
    layout: str = "auto"

    def __post_init__(self) -> None:
        if self.role not in DOMAIN_ROLES:
            raise ValueError(
                f"extra domain {self.name!r}: role={self.role!r}; "
                f"valid choices: {list(DOMAIN_ROLES)}"
            )
        if self.layout == "auto" and self.root is None and self.image_list is None:
            raise ValueError(
                f"extra domain {self.name!r}: give `root` (ImageFolder layout) or `image_list`"
            )

    def list_file(self) -> ImageListFile | None:
        """The domain's image list and the root its paths are relative to (None: no list)."""
        if self.image_list is None:
            return None
        root = self.image_root or self.root or str(Path(self.image_list).parent)
        return ImageListFile(self.image_list, root, labels="required")


#: A layout reader: (domain spec, the dataset's class names) -> {class name: [image paths]}.
#: Class names may still be the domain's own; `class_mapping` is applied afterwards.
DomainReader = Callable[[ExtraDomain, Sequence[str]], dict[str, list[str]]]

_LAYOUTS: dict[str, DomainReader] = {}


def register_domain_layout(name: str) -> Callable[[DomainReader], DomainReader]:
    """Decorator registering a reader under `name`, usable as `layout: <name>` in configs."""

    def register(reader: DomainReader) -> DomainReader:
        if name in _LAYOUTS and _LAYOUTS[name] is not reader:
            raise ValueError(f"domain layout {name!r} is already registered")
        _LAYOUTS[name] = reader
        return reader

    return register


def registered_layouts() -> list[str]:
    return sorted(_LAYOUTS)


def resolve_layout(domain: ExtraDomain) -> DomainReader:
    layout = domain.layout
    if layout == "auto":
        layout = "image_list" if domain.image_list else "image_folder"
    if layout in _LAYOUTS:
        return _LAYOUTS[layout]
    if ":" in layout:
        module_name, _, function_name = layout.partition(":")
        try:
            return getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f"extra domain {domain.name!r}: layout {layout!r} cannot be imported ({error})"
            ) from error
    raise ValueError(
        f"extra domain {domain.name!r}: unknown layout {layout!r}; valid choices: "
        f"{['auto', *registered_layouts()]} or `package.module:function`"
    )


@register_domain_layout("image_folder")
def read_image_folder(domain: ExtraDomain, class_names: Sequence[str]) -> dict[str, list[str]]:
    if domain.root is None:
        raise ValueError(f"extra domain {domain.name!r}: layout image_folder needs `root`")
    return scan_class_folders(DomainSource(domain.name, domain.root)).files_by_class


@register_domain_layout("image_list")
def read_image_list_domain(
    domain: ExtraDomain, class_names: Sequence[str]
) -> dict[str, list[str]]:
    """`path label` lines -> {class: [paths]}; the label is a class index or a class name."""
    listed = domain.list_file()
    if listed is None:
        raise ValueError(f"extra domain {domain.name!r}: layout image_list needs `image_list`")
    if not Path(listed.path).is_file():
        raise DatasetLayoutError(
            f"extra domain {domain.name!r}: image list {listed.path} does not exist"
        )
    files_by_class: dict[str, list[str]] = {}
    for entry in read_image_list(listed.path, labels="required"):
        label = entry.label or ""
        if label.lstrip("-").isdigit():
            index = int(label)
            if not 0 <= index < len(class_names):
                raise DatasetLayoutError(
                    f"{entry.where(listed.path)}: label {index} is not a class index of this "
                    f"dataset (0..{len(class_names) - 1}, in the order {list(class_names)})"
                )
            class_name = class_names[index]
        else:
            class_name = label
        path = Path(entry.path)
        files_by_class.setdefault(class_name, []).append(
            str(path if path.is_absolute() else Path(listed.root) / path)
        )
    return {name: sorted(files) for name, files in sorted(files_by_class.items())}


def scan_extra_domain(domain: ExtraDomain, class_names: Sequence[str]) -> DomainData:
    """Read an extra domain with its layout, map its classes, and check them against the
    dataset's."""
    files_by_class = resolve_layout(domain)(domain, class_names)
    mapping = domain.class_mapping or {}
    unknown_keys = sorted(set(mapping) - set(files_by_class))
    if unknown_keys:
        raise DatasetLayoutError(
            f"extra domain {domain.name!r}: class_mapping names {unknown_keys}, which the domain "
            f"does not have; its classes: {sorted(files_by_class)}"
        )
    mapped: dict[str, list[str]] = {}
    for their_name, files in files_by_class.items():
        # Several of their classes may map onto one of ours (e.g. `mug` and `cup` -> `Mug`).
        mapped.setdefault(mapping.get(their_name, their_name), []).extend(files)
    missing = sorted(set(class_names) - set(mapped))
    extra = sorted(set(mapped) - set(class_names))
    if missing or extra:
        raise DatasetLayoutError(
            f"extra domain {domain.name!r} ({domain.image_list or domain.root}) does not have "
            f"the dataset's classes: missing {missing}, extra {extra}. Rename its classes to "
            "the dataset's with `class_mapping: {their_class: our_class}`."
        )
    root = Path(domain.root or Path(domain.image_list or ".").parent)
    files = {name: sorted(mapped[name]) for name in class_names}
    return DomainData(name=domain.name, root=root, files_by_class=files)


__all__ = [
    "DOMAIN_ROLES",
    "ExtraDomain",
    "read_image_folder",
    "read_image_list_domain",
    "register_domain_layout",
    "registered_layouts",
    "resolve_layout",
    "scan_extra_domain",
]
