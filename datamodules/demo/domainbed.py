"""Generated copies of DomainBed's image-folder datasets in their real layouts, with the real
domain and class folder names, file-name patterns and split-list formats (the facts are in
`datamodules/data/domainbed_facts.py` and the docs), small enough for tests:

- PACS: `kfold/<domain>/<class>/` (`pic_NNN.jpg`; sketches `NNNN.png`, grayscale) and
  `<domain>_{train,crossval,test}_kfold.txt` (`<domain>/<class>/<file> <label>`, labels 1..7;
  the test list holds the whole domain, train and crossval split it 90/10), or DomainBed's
  `PACS/<domain>/<class>/` without lists (`layout: domainbed`);
- VLCS: `VLCS/<domain>/<class>/<32 hex>.jpg` (the prebuilt archive DomainBed downloads);
- TerraIncognita: DomainBed's `terra_incognita/location_<n>/<class>/<file>`, or the Caltech
  Camera Traps archive it is built from (`layout: cct`: `eccv_18_all_images_sm/<file>` and the
  five COCO-Camera-Traps JSONs in `eccv_18_annotation_files/`, with images at other locations
  and of other categories that the build leaves out);
- DomainNet: `<domain>/<class>/<domain>_<CCC>_<NNNNNN>.jpg` (CCC = list label + 1) and
  `<domain>_{train,test}.txt` (0-based labels in an order other than the folders' sorted
  order, as in the real lists), a few byte-identical duplicates listed in
  `domain_net_duplicates.txt` (and left out of the lists), or DomainBed's `domain_net/` with the
  duplicates deleted and no lists (`layout: domainbed`).

Every copy carries stray files (`.DS_Store`, `Thumbs.db`, a `__MACOSX/` folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from datamodules.data.domainbed_facts import (
    DOMAINNET,
    DOMAINNET_EXAMPLE_CLASSES,
    PACS,
    TERRA_INCOGNITA,
    VLCS,
)
from datamodules.demo.cache import ensure_generated
from datamodules.demo.domainbed_render import (
    DOMAINBED_DEMO_VERSION,
    render_domain_image,
    save_image,
    write_domains,
    write_stray_files,
)

LAYOUTS = ("distributed", "domainbed")
PACS_STYLES = dict(zip(PACS.domains, ("Art", "Clipart", "Real World", "Sketch"), strict=True))
PACS_LIST_SPLITS = ("train", "crossval", "test")
VLCS_STYLES = dict(zip(VLCS.domains, ("Product", "Real World", "Neutral", "Art"), strict=True))
TERRA_STYLES = dict(
    zip(TERRA_INCOGNITA.domains, ("Real World", "Night", "Neutral", "Product"), strict=True)
)
DOMAINNET_STYLES = dict(
    zip(
        DOMAINNET.domains,
        ("Clipart", "Neutral", "Art", "Doodle", "Real World", "Sketch"),
        strict=True,
    )
)
#: The five COCO-Camera-Traps annotation files DomainBed merges.
CCT_ANNOTATION_FILES = (
    "cis_test_annotations.json",
    "cis_val_annotations.json",
    "train_annotations.json",
    "trans_test_annotations.json",
    "trans_val_annotations.json",
)
CCT_IMAGES, CCT_ANNOTATIONS = "eccv_18_all_images_sm", "eccv_18_annotation_files"
#: A category and a location of the camera-trap archive that DomainBed's subset leaves out.
CCT_OTHER_CATEGORY, CCT_OTHER_LOCATION = "skunk", 61
DOMAINNET_DUPLICATES_FILE = "domain_net_duplicates.txt"
_PACS_STREAM, _VLCS_STREAM, _TERRA_STREAM, _DOMAINNET_STREAM = 21, 22, 23, 24


def _check_layout(layout: str, choices: tuple[str, ...]) -> None:
    if layout not in choices:
        raise ValueError(f"layout={layout!r}; valid choices: {list(choices)}")


def _hex_name(*parts: object) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _held_out(n: int, fraction: float, rng: np.random.Generator) -> set[int]:
    """Indices of a seeded `fraction` of n items (at least one, and never all)."""
    count = min(n - 1, max(1, round(n * fraction)))
    return set(rng.permutation(n)[:count].tolist())


def generate_pacs_demo(
    root: str | Path,
    *,
    num_classes: int = 7,
    images_per_class: int = 12,
    image_size: int = 64,
    seed: int = 0,
    layout: str = "distributed",
) -> Path:
    """Write a PACS copy into `root` (see the module docstring) and return `root`.

    Args:
        root: output folder.
        num_classes: the first `num_classes` of PACS's seven classes (their real labels).
        images_per_class: images per class and domain (at least 2: train and crossval).
        image_size: side of the square images.
        seed: base seed.
        layout: `distributed` (`kfold/` + lists) or `domainbed` (`PACS/`, no lists).
    """
    _check_layout(layout, LAYOUTS)
    if images_per_class < 2:
        raise ValueError(f"images_per_class={images_per_class}: PACS lists need at least 2")
    root = Path(root)
    image_root = root / ("kfold" if layout == "distributed" else "PACS")
    classes = PACS.classes[:num_classes]

    def name(domain: str, class_index: int, number: int) -> str:
        if domain == "sketch":
            return f"{1000 * (class_index + 1) + number + 1}.png"
        return f"pic_{number + 1:03d}.jpg"

    written = write_domains(
        image_root,
        PACS_STYLES,
        classes,
        images_per_class=images_per_class,
        image_size=image_size,
        seed=seed,
        stream=_PACS_STREAM,
        file_name=name,
    )
    write_stray_files(image_root, PACS.domains, classes)
    if layout == "distributed":
        for domain_index, domain in enumerate(PACS.domains):
            lines: dict[str, list[str]] = {split: [] for split in PACS_LIST_SPLITS}
            for label, class_name in enumerate(classes, start=1):
                files = written[domain][class_name]
                rng = np.random.default_rng([_PACS_STREAM, seed, 99, domain_index, label])
                crossval = _held_out(len(files), 0.1, rng)
                for index, file in enumerate(files):
                    line = f"{domain}/{class_name}/{file} {label}"
                    lines["crossval" if index in crossval else "train"].append(line)
                    lines["test"].append(line)
            for split, split_lines in lines.items():
                text = "\n".join(split_lines) + "\n"
                (root / f"{domain}_{split}_kfold.txt").write_text(text)
    return root


def generate_vlcs_demo(
    root: str | Path,
    *,
    num_classes: int = 5,
    images_per_class: int = 12,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write `<root>/VLCS/<domain>/<class>/<32 hex>.jpg` and return `root`.

    Args:
        root: output folder.
        num_classes: the first `num_classes` of VLCS's five classes.
        images_per_class: images per class and domain.
        image_size: side of the square images.
        seed: base seed.
    """
    image_root = Path(root) / "VLCS"
    classes = VLCS.classes[:num_classes]
    write_domains(
        image_root,
        VLCS_STYLES,
        classes,
        images_per_class=images_per_class,
        image_size=image_size,
        seed=seed,
        stream=_VLCS_STREAM,
        file_name=lambda d, c, n: f"{_hex_name(seed, d, c, n)}.jpg",
    )
    write_stray_files(image_root, VLCS.domains, classes)
    return Path(root)


def _cct_file_name(seed: int, *parts: object) -> str:
    digest = _hex_name(seed, *parts)
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}.jpg"


def generate_terra_incognita_demo(
    root: str | Path,
    *,
    num_classes: int = 10,
    images_per_class: int = 12,
    image_size: int = 64,
    seed: int = 0,
    layout: str = "domainbed",
) -> Path:
    """Write a TerraIncognita copy into `root` and return `root`.

    Both layouts hold the same images (byte for byte) under the same file names, so building
    DomainBed's layout from the `cct` one gives the `domainbed` one.

    Args:
        root: output folder.
        num_classes: the first `num_classes` of TerraIncognita's ten classes.
        images_per_class: images per class and location.
        image_size: side of the square images.
        seed: base seed.
        layout: `domainbed` (`terra_incognita/location_<n>/<class>/`) or `cct` (the camera-trap
            archive: flat image folder and annotation JSONs).
    """
    _check_layout(layout, ("domainbed", "cct"))
    root = Path(root)
    image_root = root / "terra_incognita"
    staging = root / ".terra_staging"
    classes = TERRA_INCOGNITA.classes[:num_classes]
    written = write_domains(
        staging if layout == "cct" else image_root,
        TERRA_STYLES,
        classes,
        images_per_class=images_per_class,
        image_size=image_size,
        seed=seed,
        stream=_TERRA_STREAM,
        file_name=lambda d, c, n: _cct_file_name(seed, d, c, n),
    )
    if layout == "domainbed":
        write_stray_files(image_root, TERRA_INCOGNITA.domains, classes)
        return root
    flat = root / CCT_IMAGES
    flat.mkdir(parents=True, exist_ok=True)
    categories = [*TERRA_INCOGNITA.classes, CCT_OTHER_CATEGORY]
    category_id = {name: 100 + index for index, name in enumerate(categories)}
    images, annotations = [], []
    for domain, by_class in written.items():
        location = int(domain.removeprefix("location_"))
        for class_name, files in by_class.items():
            for file in files:
                os.replace(staging / domain / class_name / file, flat / file)
                images.append({"id": file[:-4], "file_name": file, "location": location})
                annotations.append((file[:-4], class_name))
    shutil.rmtree(staging)
    # Images DomainBed's subset leaves out: another location, another category.
    rng = np.random.default_rng([_TERRA_STREAM, seed, 98])
    for index, (location, category) in enumerate(
        [(CCT_OTHER_LOCATION, "bird"), (38, CCT_OTHER_CATEGORY), (100, CCT_OTHER_CATEGORY)]
    ):
        file = _cct_file_name(seed, "other", index)
        save_image(render_domain_image(0, "Real World", rng, image_size), flat / file)
        images.append({"id": file[:-4], "file_name": file, "location": location})
        annotations.append((file[:-4], category))
    folder = root / CCT_ANNOTATIONS
    folder.mkdir(parents=True, exist_ok=True)
    for part, name in enumerate(CCT_ANNOTATION_FILES):
        chosen = images[part :: len(CCT_ANNOTATION_FILES)]
        ids = {image["id"] for image in chosen}
        record = {
            "info": {"description": "generated stand-in for Caltech Camera Traps (CCT20)"},
            "images": chosen,
            "annotations": [
                {"id": f"a{i}", "image_id": image, "category_id": category_id[category]}
                for i, (image, category) in enumerate(annotations)
                if image in ids
            ],
            "categories": [{"id": i, "name": n} for n, i in category_id.items()],
        }
        (folder / name).write_text(json.dumps(record))
    return root


def domainnet_official_order(classes: tuple[str, ...]) -> list[str]:
    """The demo's list-label order: case-insensitive, so that (as in the real lists) it
    differs from the folders' sorted order (`The_*` sort first there)."""
    return sorted(classes, key=str.casefold)


def generate_domainnet_demo(
    root: str | Path,
    *,
    num_classes: int = 10,
    images_per_class: int = 10,
    image_size: int = 64,
    seed: int = 0,
    duplicates_per_domain: int = 1,
    layout: str = "distributed",
) -> Path:
    """Write a DomainNet copy into `root` (see the module docstring) and return `root`.

    Args:
        root: output folder.
        num_classes: the first `num_classes` of `DOMAINNET_EXAMPLE_CLASSES` (real class
            names), 2..10.
        images_per_class: images per class and domain (at least 2: train and test lists).
        image_size: side of the square images.
        seed: base seed.
        duplicates_per_domain: byte-identical copies added to every domain but quickdraw (as
            DomainBed's duplicate list has none there), listed in `domain_net_duplicates.txt`;
            `distributed` layout only (DomainBed's has them deleted).
        layout: `distributed` (domain folders + lists in `root`) or `domainbed`
            (`domain_net/`, no lists, no duplicates).
    """
    _check_layout(layout, LAYOUTS)
    if not 2 <= num_classes <= len(DOMAINNET_EXAMPLE_CLASSES) or images_per_class < 2:
        raise ValueError(
            f"num_classes={num_classes} must be in 2..{len(DOMAINNET_EXAMPLE_CLASSES)} and "
            f"images_per_class={images_per_class} at least 2"
        )
    root = Path(root)
    classes = DOMAINNET_EXAMPLE_CLASSES[:num_classes]
    label_of = {name: i for i, name in enumerate(domainnet_official_order(classes))}
    image_root = root if layout == "distributed" else root / "domain_net"
    written = write_domains(
        image_root,
        DOMAINNET_STYLES,
        classes,
        images_per_class=images_per_class,
        image_size=image_size,
        seed=seed,
        stream=_DOMAINNET_STREAM,
        file_name=lambda d, c, n: f"{d}_{label_of[classes[c]] + 1:03d}_{n + 1:06d}.jpg",
    )
    write_stray_files(image_root, DOMAINNET.domains, classes)
    if layout == "domainbed":
        return root
    duplicates = []
    for domain in DOMAINNET.domains:
        if domain == "quickdraw":
            continue
        for copy in range(duplicates_per_domain):
            class_name = classes[copy % num_classes]
            original = written[domain][class_name][copy // num_classes]
            number = images_per_class + 1 + copy
            file = f"{domain}_{label_of[class_name] + 1:03d}_{number:06d}.jpg"
            folder = image_root / domain / class_name
            shutil.copyfile(folder / original, folder / file)
            duplicates.append(f"{domain}/{class_name}/{file}")
    (root / DOMAINNET_DUPLICATES_FILE).write_text("".join(f"{d}\n" for d in duplicates))
    for domain_index, domain in enumerate(DOMAINNET.domains):
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for class_index, class_name in enumerate(classes):
            files = written[domain][class_name]
            rng = np.random.default_rng([_DOMAINNET_STREAM, seed, 99, domain_index, class_index])
            test = _held_out(len(files), 0.3, rng)
            for index, file in enumerate(files):
                line = f"{domain}/{class_name}/{file} {label_of[class_name]}"
                lines["test" if index in test else "train"].append(line)
        for split, split_lines in lines.items():
            (root / f"{domain}_{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root


def _ensure(kind: str, generator, cache_dir: str | Path | None, settings: dict) -> Path:
    return ensure_generated(kind, DOMAINBED_DEMO_VERSION, generator, cache_dir, settings)


def ensure_pacs_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The PACS copy for these settings (`generate_pacs_demo`'s), generated into the cache
    (`$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`) on first use."""
    return _ensure("pacs", generate_pacs_demo, cache_dir, settings)


def ensure_vlcs_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The VLCS copy for these settings (`generate_vlcs_demo`'s), generated on first use."""
    return _ensure("vlcs", generate_vlcs_demo, cache_dir, settings)


def ensure_terra_incognita_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The TerraIncognita copy for these settings, generated on first use."""
    return _ensure("terra_incognita", generate_terra_incognita_demo, cache_dir, settings)


def ensure_domainnet_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The DomainNet copy for these settings (`generate_domainnet_demo`'s), generated on
    first use."""
    return _ensure("domainnet", generate_domainnet_demo, cache_dir, settings)
