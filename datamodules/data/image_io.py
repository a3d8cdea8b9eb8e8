"""Image decoding shared by every dataset: fast JPEG decoding at reduced size, any mode to RGB.

JPEG files are decoded with PIL's draft mode, which lets libjpeg scale by 1/2, 1/4 or 1/8 while
decoding (never below the requested size); that is most of the decoding cost for photos far
larger than the training resolution. EXIF orientation is applied, and grayscale, CMYK, RGBA,
palette and 16-bit images are converted to 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


def is_image_file(path: str | Path) -> bool:
    """Whether a file name looks like an image this project reads (hidden files never do)."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


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
        OSError: the file cannot be read or decoded (PIL's error, with the path added).
    """
    try:
        with Image.open(path) as image:
            if min_side is not None and image.format == "JPEG":
                width, height = image.size
                scale = min_side / min(width, height)
                # draft() picks the largest libjpeg reduction that keeps the requested size.
                image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            # In place: without an orientation to apply, the default returns a full copy.
            ImageOps.exif_transpose(image, in_place=True)
            image.load()
            return np.asarray(_to_rgb(image))
    except (OSError, ValueError, SyntaxError) as error:
        raise OSError(f"cannot decode image {path}: {error}") from error
