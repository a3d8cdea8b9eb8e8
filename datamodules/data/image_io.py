"""Image decoding shared by every dataset: fast JPEG decoding at reduced size, any mode to RGB.

JPEG files are decoded with PIL's draft mode, which lets libjpeg scale by 1/2, 1/4 or 1/8 while
decoding (never below the requested size); that is most of the decoding cost for photos far
larger than the training resolution. EXIF orientation is applied, and grayscale, CMYK, RGBA,
palette and 16-bit images are converted to 8-bit RGB.

Every way a file can fail to become an image raises `BadImageError` (an `OSError`, so the
bad-image policy `on_bad_image` and the data check treat them alike) naming the file and the
kind of problem: `zero-byte`, `truncated`, `unreadable`, `decompression-bomb` (a header claiming
more pixels than PIL's `Image.MAX_IMAGE_PIXELS`; PIL raises `DecompressionBombError`, which is not
an `OSError`, beyond twice that and only warns below), `undecodable-name` (a file name that is not
valid UTF-8: it cannot be logged, listed or stored in MLflow) and `symlink-loop` (ELOOP).
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from datamodules.data.findings import printable

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

# `load_rgb` refuses every image above PIL's pixel limit itself (as `decompression-bomb`), so
# PIL's warning for the range between the limit and twice the limit would only repeat that.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadImageError(OSError):
    """A file that cannot be used as an image: `kind` says why, `path` which file.

    Args:
        kind: `zero-byte`, `truncated`, `unreadable`, `decompression-bomb`,
            `undecodable-name` or `symlink-loop`.
        path: the file (as the file system returned it; see `printable`).
        detail: what went wrong, for a person.

    Raised in a DataLoader worker, torch re-raises it in the main process as
    `BadImageError(text)`, the text being the worker's whole traceback; the one-line message
    (and `kind`, `path`) are then recovered from its last line, so the user still gets one line.
    """

    _WORKER_LINE = re.compile(
        r"BadImageError: bad image (?P<path>.+) \[(?P<kind>[a-z-]+)\]: (?P<detail>.*)"
    )

    def __init__(
        self, kind: str, path: str | Path | None = None, detail: str | None = None
    ) -> None:
        if path is None and detail is None:  # torch's re-raise from a worker: `kind` is the text
            lines = kind.rstrip().splitlines()
            found = self._WORKER_LINE.search(lines[-1]) if lines else None
            if found is None:
                self.kind, self.path, self.detail = "unreadable", "", kind
                super().__init__(kind)
                return
            kind, path, detail = found["kind"], found["path"], found["detail"]
            where = f" ({lines[0].removeprefix('Caught BadImageError ').rstrip('.')})"
        else:
            where = ""
        self.kind = kind
        self.path = str(path)
        self.detail = str(detail)
        super().__init__(f"bad image {printable(self.path)} [{kind}]: {detail}{where}")

    def __reduce__(self):
        # Pickled by its arguments (the default would call __init__ with the message only).
        return type(self), (self.kind, self.path, self.detail)


def has_undecodable_name(path: str | Path) -> bool:
    """Whether `path` holds bytes that are not UTF-8: Python keeps them as lone surrogates
    (PEP 383), which open() accepts but printing, UTF-8 text, JSON and MLflow refuse."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def is_image_file(path: str | Path) -> bool:
    """Whether a file name looks like an image this project reads (hidden files never do)."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def is_image_entry(entry: os.DirEntry) -> bool:
    """Whether a directory entry is an image file to train on, for the folder scans.

    An entry whose type cannot be read (a symlink loop: ELOOP, a permission problem) counts
    when its name looks like an image: it then fails to load with a `BadImageError` naming it,
    under the bad-image policy, instead of stopping the scan of every other file. Broken
    symlinks (ENOENT) are left out as before.
    """
    if not is_image_file(entry.name):
        return False
    try:
        return entry.is_file()
    except OSError:
        return True


def is_class_folder_entry(entry: os.DirEntry) -> bool:
    """Whether a directory entry of a domain root is a class folder (hidden ones never are).

    An entry whose type cannot be read (a symlink loop: ELOOP) is not one, as for
    `Path.is_dir()`, instead of stopping the scan; the data check reports such loops.
    """
    if entry.name.startswith("."):
        return False
    try:
        return entry.is_dir()
    except OSError:
        return False


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer images: scale to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency over white rather than keeping arbitrary hidden colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array.

    Args:
        path: the image file.
        min_side: if given, JPEGs may be decoded at a reduced scale as long as both sides stay
            at least this large (the transforms crop and resize afterwards anyway).

    Raises:
        BadImageError: the file cannot be read or decoded (its `kind` says why).
    """
    if has_undecodable_name(path):
        raise BadImageError(
            "undecodable-name", path, "the file name is not valid UTF-8; rename the file"
        )
    try:
        if os.path.getsize(path) == 0:
            raise BadImageError("zero-byte", path, "file is empty (0 bytes)")
        with Image.open(path) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.size[0] * image.size[1] > limit:
                raise Image.DecompressionBombError(
                    f"{image.size[0]}x{image.size[1]} pixels exceeds the limit of {limit} "
                    "pixels (PIL.Image.MAX_IMAGE_PIXELS)."
                )
            if min_side is not None and image.format == "JPEG":
                width, height = image.size
                scale = min_side / min(width, height)
                # draft() picks the largest libjpeg reduction that keeps the requested size.
                image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            # In place: without an orientation to apply, the default returns a full copy.
            ImageOps.exif_transpose(image, in_place=True)
            image.load()
            return np.asarray(_to_rgb(image))
    except BadImageError:
        raise
    except Image.DecompressionBombError as error:
        detail = f"refused as a decompression bomb: {error} Shrink the image."
        raise BadImageError("decompression-bomb", path, detail) from error
    except (OSError, ValueError, SyntaxError) as error:
        kind = _kind_of(error)
        if kind == "symlink-loop":
            detail = "is a symlink loop (ELOOP); fix or remove the link"
        else:
            detail = f"cannot be decoded: {error}"
        raise BadImageError(kind, path, detail) from error


def _kind_of(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return "symlink-loop"
    message = str(error)
    # PIL's words for a stream that ends early: "truncated", "broken data stream".
    if "truncated" in message or "broken data stream" in message:
        return "truncated"
    return "unreadable"
