"""The drawing library of the generated demo sets: pixel grids and supersampling, smooth noise,
colours, compositing, and the texture patterns that every generator draws from.

Patterns are signed fields: positive where the pattern colour goes, zero on its edge, in pattern
periods. `soft_coverage` turns one into anti-aliased coverage (the textured shapes of the
Office-Home-like and cue-conflict sets), `hard_coverage` into a 0/1 mask (the DTD-like
textures, which anti-alias by supersampling alone). Each pattern exists once; its parameters
say where the generators' versions differ (where the lines sit, how rows are staggered, ...).

The generated files are byte-identical to those the generators wrote before they shared these
functions (tests, demo results and users' caches rely on that), so a few parameters choose
between two floating-point formulations of one shape; their docstrings say so. Changing a
function here changes the images of every generator that uses it: bump `DEMO_DATA_VERSION`
(`objects.py`) and `DTD_DEMO_VERSION` (`dtd.py`) so that stale caches are not reused.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

# Drawing happens at this multiple of the output size, then is area-downsampled: cheap
# anti-aliasing for masks, patterns and brush strokes alike.
SUPERSAMPLE = 2
JPEG_QUALITY = 90

# ----------------------------------------------------------------------------------------------
# Pixel grids, supersampling, output


@functools.lru_cache(maxsize=16)
def pixel_grid(side: int, origin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float32 coordinates of the pixels of a side x side image (read-only, cached).

    Args:
        side: image side in pixels.
        origin: added to the column and row indices: 0.5 gives pixel centres measured from the
            top-left corner, `-side / 2` indices measured from the middle of the image.
    """
    coordinates = np.arange(side, dtype=np.float32) + origin
    grids = np.meshgrid(coordinates, coordinates)
    for grid in grids:
        grid.setflags(write=False)  # shared by every caller through the cache
    return grids[0], grids[1]


def downsample(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average a supersampled square image (or mask) down to size x size."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def to_uint8(
    image: np.ndarray, rounding: Literal["half_up", "half_even"] = "half_up"
) -> np.ndarray:
    """Values in [0, 1] (clipped) to uint8; `rounding` says how halves round (the DTD-like
    textures have always rounded them to even, the textured shapes up)."""
    scaled = np.clip(image, 0.0, 1.0) * 255.0
    return (scaled.round() if rounding == "half_even" else scaled + 0.5).astype(np.uint8)


def save_jpeg(image: np.ndarray, path: str | Path) -> None:
    """Write a uint8 RGB array as a JPEG at the quality every demo set uses."""
    Image.fromarray(image).save(path, quality=JPEG_QUALITY)


# ----------------------------------------------------------------------------------------------
# Noise and colour


def smooth_noise(
    rng: np.random.Generator,
    side: int,
    cells: int,
    channels: int = 1,
    distribution: Literal["uniform", "normal"] = "uniform",
) -> np.ndarray:
    """A smooth random field with `cells` blobs across the image (side x side[x channels]).

    A coarse grid of random values (uniform in [-1, 1] or standard normal), cubic-upsampled.
    """
    size = (cells + 1, cells + 1, channels)
    coarse = (
        rng.uniform(-1.0, 1.0, size=size)
        if distribution == "uniform"
        else rng.standard_normal(size)
    )
    field = cv2.resize(coarse.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    return field if channels > 1 else field.reshape(side, side)


def hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    """RGB in [0, 1] of an HSV colour; the hue wraps around, the saturation is clipped."""
    return colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)), float(value))


def luma(rgb: Sequence[float]) -> float:
    """Perceived brightness of an RGB colour (ITU-R BT.601 weights)."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def with_brightness_gap(
    light: tuple[float, float, float], dark: tuple[float, float, float], minimum_gap: float
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Tint `light` towards white and shade `dark` towards black until their lumas differ by
    `minimum_gap`: a saturated blue is "light" by HSV value yet dark to the eye, and a
    texture drawn in two equally bright colours would be invisible in grey."""
    gap = luma(light) - luma(dark)
    if gap >= minimum_gap:
        return light, dark
    missing = minimum_gap - gap
    # Split the missing contrast between the two, in proportion to the headroom each has.
    headroom_light, headroom_dark = 1.0 - luma(light), luma(dark)
    share = headroom_light / max(headroom_light + headroom_dark, 1e-6)
    tint = min(1.0, missing * share / max(headroom_light, 1e-6))
    shade = min(1.0, missing * (1.0 - share) / max(headroom_dark, 1e-6))
    light = tuple(c + tint * (1.0 - c) for c in light)
    dark = tuple(c * (1.0 - shade) for c in dark)
    return light, dark


# ----------------------------------------------------------------------------------------------
# Compositing


def paint(
    coverage: np.ndarray, base_rgb: Sequence[float], pattern_rgb: Sequence[float]
) -> np.ndarray:
    """An HxWx3 float32 image: `base_rgb` where coverage is 0, `pattern_rgb` where it is 1."""
    base = np.asarray(base_rgb, np.float32)
    pattern = np.asarray(pattern_rgb, np.float32)
    return base + coverage[..., None] * (pattern - base)


def over(background: np.ndarray, foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`foreground` over `background` with an HxW opacity."""
    return background + alpha[..., None] * (foreground - background)


def shifted_blurred(mask: np.ndarray, dx: float, dy: float, sigma: float) -> np.ndarray:
    """A mask moved by (dx, dy) pixels and Gaussian-blurred: a soft drop shadow."""
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(mask, shift, mask.shape[::-1], borderValue=0.0)
    return cv2.GaussianBlur(moved, (0, 0), sigma)


# ----------------------------------------------------------------------------------------------
# From signed fields to coverage


def soft_coverage(signed: np.ndarray, edge: float) -> np.ndarray:
    """Coverage in [0, 1] (float32) with a linear ramp `edge` wide (in the field's units)."""
    return np.clip(0.5 + signed / edge, 0.0, 1.0).astype(np.float32)


def hard_coverage(signed: np.ndarray) -> np.ndarray:
    """1.0 where the field is positive, else 0.0 (float32)."""
    return (signed > 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Lines: the building block of most patterns. `offset` says where the lines sit within a
# period: 0 on every integer phase, 0.5 on every half-integer.


def line_distance(phase: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Distance from `phase` to the nearest line `offset + k` (k integer), in [0, 0.5]."""
    return np.abs(phase - np.floor(phase + (0.5 - offset)) - offset)


def band(phase: np.ndarray, width: float, offset: float = 0.0) -> np.ndarray:
    """Signed field of bands `width` wide (a fraction of the period) centred on the lines."""
    return width / 2 - line_distance(phase, offset)


# ----------------------------------------------------------------------------------------------
# Patterns. Coordinates and lengths are in any unit and `period` is the period in that unit
# (1.0: the coordinates are already in periods); the result is in periods.


def stripes(u: np.ndarray, *, width: float, offset: float = 0.0, period: float = 1.0) -> np.ndarray:
    """Straight bands of constant `u`, `width` of a period wide."""
    return band(u / period, width, offset)


def rings(
    radius: np.ndarray, *, width: float, offset: float = 0.0, period: float = 1.0
) -> np.ndarray:
    """Concentric rings: stripes of the distance from a centre."""
    return stripes(radius, width=width, offset=offset, period=period)


def grid(
    first: np.ndarray,
    second: np.ndarray,
    *,
    width: float,
    offset: float = 0.0,
    period: float = 1.0,
) -> np.ndarray:
    """Two families of lines, of constant `first` and of constant `second` (a square grid when
    the two are perpendicular coordinates, a crosshatch when they cross at another angle)."""
    return np.maximum(band(first / period, width, offset), band(second / period, width, offset))


def waves(
    across: np.ndarray,
    wave_angle: np.ndarray,
    *,
    amplitude: float,
    width: float,
    offset: float = 0.0,
    period: float = 1.0,
) -> np.ndarray:
    """Stripes of constant `across`, displaced by `amplitude * sin(wave_angle)`.

    `wave_angle` (radians) is computed by the caller from the coordinate along the stripes,
    so that each generator keeps the exact arithmetic its images were made with.
    """
    return band((across + amplitude * np.sin(wave_angle)) / period, width, offset)


def zigzag(
    across: np.ndarray,
    zigzag_phase: np.ndarray,
    *,
    amplitude: float,
    width: float,
    offset: float = 0.0,
    period: float = 1.0,
) -> np.ndarray:
    """Stripes of constant `across`, displaced by `amplitude` times a triangle wave of
    `zigzag_phase` (in cycles; the wave is 0 on the lines at `offset` and 1 halfway between)."""
    triangle = 2.0 * line_distance(zigzag_phase, offset)
    return band((across + amplitude * triangle) / period, width, offset)


def dots(
    u: np.ndarray,
    v: np.ndarray,
    *,
    radius: float,
    row_shift: float = 0.5,
    alternate_rows: bool = False,
    squared_distance: bool = False,
    period: float = 1.0,
) -> np.ndarray:
    """Discs of `radius` (periods) centred on the half-integer lattice, rows staggered.

    Args:
        u, v: coordinates; rows run along u.
        radius: disc radius in periods.
        row_shift: stagger in periods: every other row is shifted by it (`alternate_rows`),
            or row k by k times it (for 0.5 the same lattice, computed differently).
        alternate_rows: see `row_shift`.
        squared_distance: return radius**2 - distance**2 instead of radius - distance: the
            same sign without a square root, enough where only the sign is used.
        period: the period in the unit of u, v.
    """
    rows = np.floor(v / period)
    shift = row_shift * (rows % 2 if alternate_rows else rows)
    x = line_distance(u / period + shift, 0.5)
    y = line_distance(v / period, 0.5)
    if squared_distance:
        return radius**2 - (x**2 + y**2)
    return radius - np.hypot(x, y)


def checks(
    u: np.ndarray, v: np.ndarray, *, scale: float, parity: bool = False, period: float = 1.0
) -> np.ndarray:
    """A checkerboard of squares 0.5 / `scale` periods wide, edges on the axes.

    Squares are numbered from the axes. `parity=True` gives +0.5 on the squares whose row and
    column numbers sum to an odd number and -0.5 on the others (for hard edges). Otherwise the
    field is positive on the even squares and measures the distance to the nearest edge that
    ends an even-numbered row or column, so it ramps across those edges and jumps across the
    others (soft and hard edges alternate).
    """
    x, y = u / period * scale, v / period * scale
    if parity:
        return (np.floor(2.0 * x) + np.floor(2.0 * y)) % 2 - 0.5
    a = x - np.floor(x) - 0.5
    b = y - np.floor(y) - 0.5
    return np.sign(a * b) * np.minimum(np.abs(a), np.abs(b)) / scale


def bricks(
    u: np.ndarray, v: np.ndarray, *, height: float, width: float, mortar: float
) -> np.ndarray:
    """A running-bond brick wall: bricks `width` x `height`, joints `mortar` wide (periods)."""
    rows = v / height
    columns = u / width + 0.5 * np.floor(rows)
    to_mortar = np.minimum(
        (0.5 - line_distance(rows, 0.5)) * height, (0.5 - line_distance(columns, 0.5)) * width
    )
    return mortar / 2 - to_mortar


def rays(angle: np.ndarray, radius: np.ndarray, *, count: int, width: float = 0.5) -> np.ndarray:
    """`count` rays from a centre, each `width` of its angular period wide; `radius` in periods
    converts the angular distance to periods, so the edges stay equally sharp at every radius."""
    return band(angle * count / (2.0 * np.pi), width, 0.5) * (2.0 * np.pi * radius / count)


def blotches(noise: np.ndarray, *, threshold: float = 0.0, gain: float = 1.0) -> np.ndarray:
    """Irregular patches with no lattice: where smooth noise exceeds `threshold`; `gain`
    scales the field (in periods per unit of noise), which sets how soft its edges come out."""
    return gain * (noise - threshold)


def cracks(u: np.ndarray, v: np.ndarray, seeds: np.ndarray, *, width: float) -> np.ndarray:
    """The edges of the Voronoi cells of `seeds` (N x 2, in the unit of u, v): thin, irregular,
    branching lines where the nearest two seeds are within `width` of equally far."""
    points = np.stack([u.ravel(), v.ravel()], axis=1)
    distances = np.sqrt(((points[:, None, :] - seeds[None, :, :]) ** 2).sum(axis=2))
    nearest_two = np.partition(distances, 1, axis=1)[:, :2]
    gap = (nearest_two[:, 1] - nearest_two[:, 0]).reshape(u.shape)
    return width - gap
