"""TerraIncognita (Beery et al., "Recognition in Terra Incognita", ECCV 2018), DomainBed's
subset of Caltech Camera Traps: four camera locations as domains (`location_100`,
`location_38`, `location_43`, `location_46`, sorted as strings; DomainBed's L100, L38, L43,
L46), ten classes (`bird`, `bobcat`, `cat`, `coyote`, `dog`, `empty`, `opossum`, `rabbit`,
`raccoon`, `squirrel`), 24,788 images in DomainBed's build (L100 4,879, L38 9,767, L43 4,020,
L46 6,122; rebuilding from the archives of 2022 has been reported to give 24,330), `.jpg`.

The DataModule reads DomainBed's layout, `terra_incognita/location_<n>/<class>/<file>` (see
`datamodules/domainbed.py` for what is shared). The data is distributed as the camera-trap
archive, `eccv_18_all_images_sm/<file>` (all images, one folder) plus
`eccv_18_annotation_files/` with five COCO-Camera-Traps JSONs; `build_terra_incognita` (and
`python -m experiments.build_terra_incognita`) turns it into DomainBed's layout exactly as
DomainBed's download script does:

- merge the `images`, `annotations` and `categories` lists of `cis_test_annotations.json`,
  `cis_val_annotations.json`, `train_annotations.json`, `trans_test_annotations.json` and
  `trans_val_annotations.json` (images: `id`, `file_name`, `location`; annotations:
  `image_id`, `category_id`; categories: `id`, `name`);
- keep the images whose `str(location)` is 38, 46, 100 or 43;
- for every annotation of such an image whose category is one of the ten classes, put the image
  in `location_<location>/<category>/<file_name>`: an image annotated with two of the classes
  lands in both folders, as in DomainBed.

Unlike DomainBed's script it links the files instead of copying them where it can (`copy:
false`), looks annotations up by image (DomainBed's loop is quadratic) and deletes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from functools import cached_property
from pathlib import Path, PurePosixPath

from datamodules.data.domainbed_facts import TERRA_INCOGNITA
from datamodules.data.layout import DatasetLayoutError
from datamodules.demo.domainbed import (
    CCT_ANNOTATION_FILES,
    CCT_ANNOTATIONS,
    CCT_IMAGES,
    ensure_terra_incognita_demo,
)
from datamodules.domainbed import DomainBedImageFolderDataModule
from datamodules.generated import GeneratedData

#: The camera locations DomainBed keeps, compared as strings (`str(location)`).
TERRA_LOCATIONS = tuple(d.removeprefix("location_") for d in TERRA_INCOGNITA.domains)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetLayoutError(
            f"annotation file {path} does not exist. {TERRA_INCOGNITA.how_to_get}"
        )
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"{path} is not readable JSON: {error}") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in record]
    if missing:
        raise DatasetLayoutError(f"{path}: missing keys {missing} of a COCO-Camera-Traps file")
    return record


def subset_placements(annotation_folder: Path) -> list[tuple[str, str, str]]:
    """(file_name, location folder, category) of every image DomainBed's subset keeps, once
    per kept annotation, from the five annotation files of `annotation_folder`."""
    images, annotations, categories = [], [], []
    for name in CCT_ANNOTATION_FILES:
        path = annotation_folder / name
        record = _read_json(path)
        try:
            images += [(i["id"], i["file_name"], str(i["location"])) for i in record["images"]]
            annotations += [(a["image_id"], a["category_id"]) for a in record["annotations"]]
            categories += [(c["id"], c["name"]) for c in record["categories"]]
        except (KeyError, TypeError) as error:
            raise DatasetLayoutError(f"{path}: an entry lacks the key {error}") from None
    category_name = dict(categories)
    by_image: dict[object, list[str]] = defaultdict(list)
    for image_id, category_id in annotations:
        by_image[image_id].append(category_name.get(category_id, ""))
    placements = []
    for image_id, file_name, location in images:
        if location not in TERRA_LOCATIONS:
            continue
        for category in by_image.get(image_id, []):
            if category in TERRA_INCOGNITA.classes:
                placements.append((file_name, f"location_{location}", category))
    # An image or annotation repeated across the files is placed once (the same file).
    return list(dict.fromkeys(placements))


def build_terra_incognita(source: str | Path, destination: str | Path, copy: bool = False) -> dict:
    """Build DomainBed's `location_<n>/<class>/<file>` layout from the camera-trap archive.

    Args:
        source: the folder holding `eccv_18_all_images_sm/` and `eccv_18_annotation_files/`.
        destination: the folder the location folders are written into (created if needed;
            DomainBed's is `<data_dir>/terra_incognita`).
        copy: copy the images; by default they are hard-linked (no extra space), and copied
            only where linking fails (another file system).

    Returns:
        `{location folder: {class: images}}`, counted as placed.
    """
    source, destination = Path(source).expanduser(), Path(destination).expanduser()
    images = source / CCT_IMAGES
    if not images.is_dir():
        raise DatasetLayoutError(f"no {CCT_IMAGES}/ in {source}. {TERRA_INCOGNITA.how_to_get}")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for file_name, location, category in subset_placements(source / CCT_ANNOTATIONS):
        relative = PurePosixPath(file_name)
        if relative.is_absolute() or ".." in relative.parts:
            raise DatasetLayoutError(f"{source}: image file_name {file_name!r} leaves {images}")
        origin = images / relative
        if not origin.is_file():
            raise DatasetLayoutError(f"{origin} (annotated at {location}) does not exist")
        target = destination / location / category / relative.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()  # DomainBed's copy overwrites; a link must be replaced
        try:
            if copy:
                raise OSError("copy requested")
            os.link(origin, target)
        except OSError:
            shutil.copyfile(origin, target)
        counts[location][category] += 1
    return {location: dict(by_class) for location, by_class in sorted(counts.items())}


class TerraIncognitaDataModule(DomainBedImageFolderDataModule):
    """TerraIncognita in DomainBed's layout; the seeded holdout split."""

    dataset_name = "terra_incognita"
    facts = TERRA_INCOGNITA

    @cached_property
    def image_root(self) -> Path:
        try:
            return super().image_root
        except DatasetLayoutError as error:
            root = Path(self.root).expanduser()
            if (root / CCT_IMAGES).is_dir():
                raise DatasetLayoutError(
                    f"{root} holds the camera-trap archive ({CCT_IMAGES}/), not DomainBed's "
                    "location folders; build them once with `python -m "
                    f"experiments.build_terra_incognita --source {root} --dest "
                    f"{root / 'terra_incognita'}` and pass that folder as root"
                ) from error
            raise


class TerraIncognitaDemoDataModule(GeneratedData, TerraIncognitaDataModule):
    """A generated TerraIncognita copy in DomainBed's layout (the demo shapes in four styles,
    real folder names), created on first use; the same code path as the real dataset."""

    demo_generator = staticmethod(ensure_terra_incognita_demo)

    def __init__(
        self,
        root: str | None = None,
        demo_classes: int = 10,
        images_per_class: int = 12,
        demo_image_size: int = 64,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """TerraIncognita demo DataModule.

        Args:
            root: where the copy is (default: generated into the cache folder).
            demo_classes: the first `demo_classes` of the real classes (1..10).
            images_per_class: images per class and location.
            demo_image_size: side of the generated images.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `TerraIncognitaDataModule`.
        """
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            images_per_class=images_per_class,
            image_size=demo_image_size,
            seed=demo_seed,
        )
        super().__init__(root=root, **kwargs)
