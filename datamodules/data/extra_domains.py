"""Domains added to any dataset by configuration (`data.init_args.extra_domains`), and the
registry of domain layouts: ImageFolder folders, image-list files, and readers users register.

An image list is the format of domain-adaptation toolkits (Transfer-Learning-Library, DomainBed
ports): one `path label` line per image, the label a class index or a class name.
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.data.findings import ERROR, Finding
from datamodules.data.image_lists import (
    ImageListFile,
    entry_problem,
    identity,
    read_image_list,
    resolve_entry,
)
from datamodules.data.layout import (
    DatasetLayoutError,
    DomainData,
    DomainSource,
    class_folder_findings,
    scan_class_folders,
)
from datamodules.data.problems import DataProblemsError

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
        allow_outside_root: let `image_list` name absolute paths and paths that resolve outside
            its root (by default such lines are errors naming the list file and line: a list
            should not make training read arbitrary files).
    """

    name: str
    root: str | None = None
    image_list: str | None = None
    image_root: str | None = None
    class_mapping: dict[str, str] | None = None
    role: str = "train"
    layout: str = "auto"
    allow_outside_root: bool = False

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
        return ImageListFile(
            self.image_list,
            root,
            labels="required",
            allow_outside_root=self.allow_outside_root,
            allow_option=f"extra domain {self.name!r} allow_outside_root",
        )


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
def read_image_list_domain(domain: ExtraDomain, class_names: Sequence[str]) -> dict[str, list[str]]:
    """`path label` lines -> {class: [paths]}; the label is a class index or a class name.

    Every bad line (leaving the root, a label that is no class, a path listed twice) is
    collected; `DataProblemsError` lists them all with their `list:line`.
    """
    listed = domain.list_file()
    if listed is None:
        raise ValueError(f"extra domain {domain.name!r}: layout image_list needs `image_list`")
    if not Path(listed.path).is_file():
        raise DatasetLayoutError(
            f"extra domain {domain.name!r}: image list {listed.path} does not exist"
        )
    files_by_class, findings = read_labelled_list(
        listed, class_names, domain.class_mapping, report_missing=True
    )
    # Missing files alone are the bad-image policy's (the CLI checks them before training);
    # with other bad lines, they are listed too, so that one report has every bad line.
    if any(f.severity == ERROR and f.kind != "missing-file" for f in findings):
        raise DataProblemsError(findings, headline=f"extra domain {domain.name!r}: bad list lines")
    return files_by_class


def read_labelled_list(
    listed: ImageListFile,
    class_names: Sequence[str],
    class_mapping: dict[str, str] | None = None,
    report_missing: bool = False,
) -> tuple[dict[str, list[str]], list[Finding]]:
    """A `path label` list's files by class, and a finding for every line that is wrong.

    The one reading of an extra domain's list, by training and by the data check: lines that
    leave the root (unless allowed), labels that are neither a class index nor a class name
    (of the dataset, or a key of `class_mapping`), and repeated paths are findings (the line
    is then left out). With `report_missing`, a listed file that does not exist is a
    `missing-file` finding too (the line is kept: `on_bad_image: skip` skips it).
    """
    known_names = set(class_names) | set(class_mapping or {})
    files_by_class: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    findings: list[Finding] = []
    for entry in read_image_list(listed.path, labels="required"):
        problem = entry_problem(
            entry.path, listed.root, listed.allow_outside_root, listed.allow_option
        )
        if problem is not None:
            findings.append(Finding(ERROR, *problem, listed.path, entry.line_number))
            continue
        label = entry.label or ""
        if label.lstrip("-").isdigit():
            index = int(label)
            if not 0 <= index < len(class_names):
                message = (
                    f"label {index} is not a class index of this dataset "
                    f"(0..{len(class_names) - 1}, in the order {list(class_names)})"
                )
                findings.append(
                    Finding(ERROR, "unknown-class", message, listed.path, entry.line_number)
                )
                continue
            class_name = class_names[index]
        elif label in known_names:
            class_name = label
        else:
            message = (
                f"label {label!r} is not a class of this dataset; valid choices: "
                f"{list(class_names)} (or rename it with `class_mapping`)"
            )
            findings.append(
                Finding(ERROR, "unknown-class", message, listed.path, entry.line_number)
            )
            continue
        path = resolve_entry(entry, listed)
        key = identity(path)
        if key in first_line:
            message = f"{entry.path!r} is listed again (first at line {first_line[key]})"
            findings.append(Finding(ERROR, "duplicate", message, listed.path, entry.line_number))
            continue
        first_line[key] = entry.line_number
        if report_missing and not Path(key).is_file() and not Path(path).is_symlink():
            message = f"{entry.path!r} does not exist"
            findings.append(Finding(ERROR, "missing-file", message, listed.path, entry.line_number))
        files_by_class.setdefault(class_name, []).append(path)
    return {name: sorted(files) for name, files in sorted(files_by_class.items())}, findings


def scan_extra_domain(domain: ExtraDomain, class_names: Sequence[str]) -> DomainData:
    """Read an extra domain with its layout, map its classes, and check them against the
    dataset's (`DataProblemsError` listing every problem)."""
    files_by_class = resolve_layout(domain)(domain, class_names)
    mapping = domain.class_mapping or {}
    unknown_keys = sorted(set(mapping) - set(files_by_class))
    findings: list[Finding] = []
    where = domain.image_list or domain.root
    if unknown_keys:
        message = (
            f"extra domain {domain.name!r}: class_mapping names {unknown_keys}, which the "
            f"domain does not have; its classes: {sorted(files_by_class)}"
        )
        findings.append(Finding(ERROR, "unknown-class", message, where))
    mapped: dict[str, list[str]] = {}
    for their_name, files in files_by_class.items():
        # Several of their classes may map onto one of ours (e.g. `mug` and `cup` -> `Mug`).
        mapped.setdefault(mapping.get(their_name, their_name), []).extend(files)
    missing = sorted(set(class_names) - set(mapped))
    extra = sorted(set(mapped) - set(class_names))
    if missing or extra:
        message = (
            f"extra domain {domain.name!r} does not have the dataset's classes: missing "
            f"{missing}, extra {extra}. Rename its classes to the dataset's with "
            "`class_mapping: {their_class: our_class}`."
        )
        findings.append(Finding(ERROR, "class-mismatch", message, where))
    root = Path(domain.root or Path(domain.image_list or ".").parent)
    files = {name: sorted(mapped.get(name, [])) for name in class_names}
    data = DomainData(name=domain.name, root=root, files_by_class=files)
    if findings:
        raise DataProblemsError(findings, [data], headline=f"extra domain {domain.name!r}")
    return data


def scan_domains(
    sources: Sequence[DomainSource],
    extra_domains: Sequence[ExtraDomain] = (),
    scan: Callable[[DomainSource], DomainData] = scan_class_folders,
) -> tuple[list[DomainData], list[Finding]]:
    """Scan a dataset's domains, then its extra domains; every problem found, not the first.

    `scan` reads one dataset domain (the DataModule passes its indexed scan).
    Returns the domains that could be read and the findings (missing folders, class-folder
    mismatches, empty domains and classes, bad list lines, bad extra-domain settings). Extra
    domains are read against the dataset's own classes, so they are only read once those agree.
    """
    findings: list[Finding] = []
    domains: list[DomainData] = []
    for source in sources:
        try:
            domains.append(scan(source))
        except DatasetLayoutError as error:
            findings.append(Finding(ERROR, "missing-domain", str(error), str(source.root)))
        except OSError as error:  # a domain folder that cannot be listed
            kind = "symlink-loop" if error.errno == errno.ELOOP else "unreadable-domain"
            message = f"domain {source.name!r} cannot be scanned: {error.strerror}"
            findings.append(Finding(ERROR, kind, message, error.filename or str(source.root)))
    findings += class_folder_findings(domains)
    if not extra_domains or any(f.severity == ERROR for f in findings):
        return domains, findings
    class_names = sorted(domains[0].files_by_class)
    for extra in extra_domains:
        try:
            domains.append(scan_extra_domain(extra, class_names))
        except DataProblemsError as error:
            findings += error.findings
            domains += error.domains
        except (DatasetLayoutError, ValueError, OSError) as error:
            where = extra.image_list or extra.root
            findings.append(Finding(ERROR, "extra-domain", str(error), where))
    findings += [f for f in class_folder_findings(domains) if f not in findings]
    return domains, findings


__all__ = [
    "DOMAIN_ROLES",
    "ExtraDomain",
    "read_image_folder",
    "read_image_list_domain",
    "read_labelled_list",
    "register_domain_layout",
    "registered_layouts",
    "resolve_layout",
    "scan_domains",
    "scan_extra_domain",
]
