"""Drawing and writing the generated copies of DomainBed's image-folder datasets (PACS, VLCS,
TerraIncognita, DomainNet): class k is the demo shape k with its texture (`objects.py`), each
domain a drawing style. Beside the Office-Home styles (`styles.py`) the real domains need three
more, drawn here from the same shapes: `Sketch` (PACS and DomainNet sketches: a dark outline on
white, grayscale), `Doodle` (DomainNet's quickdraw: a thin outline), and `Night` (camera-trap
infrared frames: the photo-like rendering in gray, darker and noisier).

Every image is seeded by its own stream (`[stream, seed, domain, class, number]`), so counts and
domain selection do not change the images that are generated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import datamodules.demo.drawing as drawing
from datamodules.demo.objects import check_positive, render_object
from datamodules.demo.preview import first_image, save_grid
from datamodules.demo.shapes import DEMO_CLASSES, sample_geometry, shape_mask
from datamodules.demo.styles import RENDER_STYLES

#: The styles drawn here, beside `RENDER_STYLES`.
LINE_STYLES = ("Sketch", "Doodle")
EXTRA_STYLES = (*LINE_STYLES, "Night")
#: Bump when the rendering here changes, so cached copies are regenerated.
DOMAINBED_DEMO_VERSION = 1


def render_lines(class_index: int, style: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """A `Sketch` (dark pencil outline, some strokes doubled) or `Doodle` (one thin pen line)
    of the class's shape on white paper, as a side x side uint8 grayscale array."""
    geometry = sample_geometry("Neutral", rng)
    big = side * drawing.SUPERSAMPLE
    mask = (shape_mask(class_index, geometry, big) > 0.5).astype(np.uint8)
    relative = 0.03 if style == "Sketch" else 0.012
    width = max(3, round(relative * big * rng.uniform(0.8, 1.3))) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, kernel).astype(np.float32)
    if style == "Sketch":
        # A second, shifted pass, as a sketched contour is drawn over more than once.
        shift = np.float32([[1, 0, rng.normal(0, 0.01 * big)], [0, 1, rng.normal(0, 0.01 * big)]])
        again = cv2.warpAffine(outline, shift, (big, big))
        outline = np.maximum(outline, rng.uniform(0.4, 0.8) * again)
    ink = rng.uniform(0.0, 0.25)
    paper = rng.uniform(0.94, 1.0)
    image = paper + outline * (ink - paper)
    return drawing.to_uint8(drawing.downsample(image, side))


def render_night(class_index: int, rng: np.random.Generator, side: int) -> np.ndarray:
    """The photo-like rendering as an infrared night frame: gray, dark, grainy (HxWx3)."""
    photo = render_object(class_index, class_index, "Real World", rng, side).astype(np.float32)
    gray = photo @ np.float32([0.299, 0.587, 0.114]) / 255.0
    gray = 0.12 + 0.6 * gray + rng.normal(0.0, 0.04, size=gray.shape).astype(np.float32)
    return np.repeat(drawing.to_uint8(gray)[..., None], 3, axis=2)


def render_domain_image(
    class_index: int, style: str, rng: np.random.Generator, side: int
) -> np.ndarray:
    """One image of class `class_index` (shape and texture) in `style` (uint8, HxW or HxWx3)."""
    if style in LINE_STYLES:
        return render_lines(class_index, style, rng, side)
    if style == "Night":
        return render_night(class_index, rng, side)
    if style not in RENDER_STYLES:
        raise ValueError(f"unknown style {style!r}; valid: {[*RENDER_STYLES, *EXTRA_STYLES]}")
    return render_object(class_index, class_index, style, rng, side)


def save_image(image: np.ndarray, path: Path) -> None:
    """JPEG at the demos' quality, or PNG (grayscale stays one channel) by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        Image.fromarray(image).save(path)
    else:
        drawing.save_jpeg(np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image, path)


#: Name of a generated file: (domain, class index, number) -> file name.
FileNamer = Callable[[str, int, int], str]


def write_domains(
    image_root: Path,
    styles: dict[str, str],
    classes: Sequence[str],
    *,
    images_per_class: int,
    image_size: int,
    seed: int,
    stream: int,
    file_name: FileNamer,
) -> dict[str, dict[str, list[str]]]:
    """Write `<image_root>/<domain>/<class>/<file>` for every domain (styled by `styles`) and
    class; returns `{domain: {class: [file names]}}` in generation order.

    Args:
        image_root: the folder the domain folders go in (created if needed).
        styles: domain folder -> style (`RENDER_STYLES` or `EXTRA_STYLES`).
        classes: the class folder names; class k is drawn as demo shape k.
        images_per_class: images per class and domain.
        image_size: side of the square images.
        seed: base seed.
        stream: the dataset's stream, apart from the other generators'.
        file_name: the name of each file (its suffix picks JPEG or PNG).
    """
    check_positive(images_per_class=images_per_class, image_size=image_size)
    if not 1 <= len(classes) <= len(DEMO_CLASSES):
        raise ValueError(f"{len(classes)} classes; the demo draws 1..{len(DEMO_CLASSES)}")
    written: dict[str, dict[str, list[str]]] = {}
    for domain_index, (domain, style) in enumerate(styles.items()):
        written[domain] = {}
        for class_index, class_name in enumerate(classes):
            names = []
            for number in range(images_per_class):
                rng = np.random.default_rng([stream, seed, domain_index, class_index, number])
                image = render_domain_image(class_index, style, rng, image_size)
                name = file_name(domain, class_index, number)
                save_image(image, image_root / domain / class_name / name)
                names.append(name)
            written[domain][class_name] = names
    return written


def write_stray_files(image_root: Path, domains: Sequence[str], classes: Sequence[str]) -> None:
    """What real archives carry beside the images: Finder and Explorer debris in the folders,
    and a `__MACOSX/` resource-fork folder beside the domains."""
    (image_root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for domain in domains:
        (image_root / domain / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (image_root / domain / classes[0] / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    macosx = image_root / "__MACOSX" / domains[0]
    macosx.mkdir(parents=True, exist_ok=True)
    (macosx / "._.DS_Store").write_bytes(b"\x00\x05\x16\x07")


def save_image_folder_grid(image_root: str | Path, output: str | Path, title: str) -> Path:
    """A PNG of an image-folder copy: rows = domain folders, columns = class folders."""
    image_root = Path(image_root)
    domains = sorted(
        p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
    )
    classes = sorted(p.name for p in (image_root / domains[0]).iterdir() if p.is_dir())
    cells = [[first_image(image_root / d / c, "*.*g") for c in classes] for d in domains]
    return save_grid(cells, domains, classes, title, output)
