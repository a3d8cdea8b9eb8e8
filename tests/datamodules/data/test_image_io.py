"""Unusual image modes load as 8-bit RGB, EXIF orientation applied (files generated here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.data.checks import check_image_file
from datamodules.data.image_io import load_rgb


def _assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.jpg"
    Image.fromarray(np.full((20, 30), 128, dtype=np.uint8), mode="L").save(path)
    array = load_rgb(path)
    _assert_rgb(array, 20, 30)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert check_image_file(path) is None


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    # Pure cyan in CMYK: no red, full green and blue.
    cyan = np.zeros((16, 24, 4), dtype=np.uint8)
    cyan[..., 0] = 255
    Image.fromarray(cyan, mode="CMYK").save(path, quality=95)
    with Image.open(path) as image:
        assert image.mode == "CMYK"
    array = load_rgb(path)
    _assert_rgb(array, 16, 24)
    red, green, blue = array[8, 12].astype(int)
    assert red < 40 and green > 200 and blue > 200
    assert check_image_file(path) is None


def test_rgba_png_is_composited_over_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)
    pixels[..., 0] = 255  # red...
    pixels[:, :5, 3] = 255  # ...opaque on the left, fully transparent on the right
    Image.fromarray(pixels, mode="RGBA").save(path)
    array = load_rgb(path)
    _assert_rgb(array, 10, 10)
    assert tuple(array[5, 2]) == (255, 0, 0)
    assert tuple(array[5, 8]) == (255, 255, 255)
    assert check_image_file(path) is None


def test_palette_png_with_transparency_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    image.info["transparency"] = 1
    image.save(path, transparency=1)
    array = load_rgb(path)
    _assert_rgb(array, 8, 8)
    assert tuple(array[0, 0]) == (0, 0, 255)


def test_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    array = load_rgb(path)
    _assert_rgb(array, 8, 8)
    # Scaled: the brightest pixel is white, mid-grey stays mid-grey (clipping would give 255).
    assert array.max() == 255
    assert 100 < array[4, 0, 0] < 160
    assert check_image_file(path) is None


@pytest.mark.parametrize("min_side", [None, 4])
def test_exif_orientation_is_applied(tmp_path: Path, min_side: int | None) -> None:
    path = tmp_path / "rotated.jpg"
    # Stored 40 wide x 20 high, left half black, right half white; orientation 6 = "rotate 90 CW
    # to display", so the displayed image is 20 wide x 40 high with the black half on top.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    array = load_rgb(path, min_side=min_side)
    height, width = array.shape[:2]
    assert height > width
    assert array[: height // 4].mean() < 40  # black on top
    assert array[-height // 4 :].mean() > 215  # white at the bottom
    assert check_image_file(path) is None
