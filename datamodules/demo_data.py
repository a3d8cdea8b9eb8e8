"""Generated demo data: an Office-Home-like set of textured shapes in four drawing styles, and a
cue-conflict set (shape of one class, texture of another) in Geirhos et al.'s layout.

Every class is a shape with its own surface texture, so a model can learn either cue; every
domain is a drawing style. Files are written in the published layouts
(`<root>/<Domain>/<Class>/<NNNNN>.jpg` and `<root>/<shape>/<shape><i>-<texture><j>.png`), so the
demo runs through the same code path as the real datasets. Generation is seeded per image, so the
same settings give byte-identical files on the same library versions.

    python -m datamodules.demo_data officehome --root data/officehome_demo --grid grid.png
    python -m datamodules.demo_data cue_conflict --root data/cue_conflict_demo --grid cc.png
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEMO_DOMAINS: tuple[str, ...] = ("Art", "Clipart", "Product", "Real World")
# Office-Home-style folder names; class k is drawn as shape k filled with texture k.
DEMO_CLASSES: tuple[str, ...] = (
    "Circle",
    "Triangle",
    "Square",
    "Star",
    "Cross",
    "Heart",
    "Crescent",
    "Arrow",
    "Lightning_Bolt",
    "Ring",
)
DEMO_TEXTURES: tuple[str, ...] = (
    "stripes",
    "dots",
    "zigzag",
    "checks",
    "rings",
    "blotches",
    "waves",
    "grid",
    "bricks",
    "rays",
)
# "Neutral" is not a domain: a plain rendering for cue-conflict images.
RENDER_STYLES: tuple[str, ...] = (*DEMO_DOMAINS, "Neutral")
COMPLETE_MARKER = ".complete"
# Part of the cache key: bump it whenever the rendering changes, so stale caches are not reused.
DEMO_DATA_VERSION = 1
JPEG_QUALITY = 90
CUE_CONFLICT_NAME = re.compile(r"^(?P<shape>.+?)(?P<i>\d+)-(?P<texture>.+?)(?P<j>\d+)\.png$")

# Drawing happens at this multiple of the output size, then is area-downsampled: cheap
# anti-aliasing for masks, patterns and brush strokes alike.
_SUPERSAMPLE = 2
# First element of every per-image seed, so the two generators never share random streams.
_OFFICEHOME_STREAM, _CUE_CONFLICT_STREAM = 1, 2


# ----------------------------------------------------------------------------------------------
# Shapes: polygons in unit coordinates (within the unit circle, y pointing down). A shape is a
# list of (polygon, fill) layers drawn in order, so holes (Crescent, Ring) are a second layer.


def _regular_polygon(corners: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(start_deg + 360.0 * np.arange(corners) / corners)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _circle(radius: float = 1.0, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    return _regular_polygon(96, radius) + np.asarray(centre)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    angles = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 120, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    points = np.stack([x, y], axis=1)
    points -= (points.max(axis=0) + points.min(axis=0)) / 2.0
    return points / np.abs(points).max()


def _shape_layers() -> tuple[tuple[tuple[np.ndarray, bool], ...], ...]:
    cross_arm, cross_reach = 0.3, 0.92
    cross = np.array(
        [
            (-cross_arm, -cross_reach),
            (cross_arm, -cross_reach),
            (cross_arm, -cross_arm),
            (cross_reach, -cross_arm),
            (cross_reach, cross_arm),
            (cross_arm, cross_arm),
            (cross_arm, cross_reach),
            (-cross_arm, cross_reach),
            (-cross_arm, cross_arm),
            (-cross_reach, cross_arm),
            (-cross_reach, -cross_arm),
            (-cross_arm, -cross_arm),
        ]
    )
    arrow = np.array(
        [
            (-0.95, -0.22),
            (0.12, -0.22),
            (0.12, -0.62),
            (0.95, 0.0),
            (0.12, 0.62),
            (0.12, 0.22),
            (-0.95, 0.22),
        ]
    )
    bolt = np.array(
        [
            (0.05, -1.0),
            (-0.6, 0.16),
            (-0.08, 0.16),
            (-0.3, 1.0),
            (0.6, -0.22),
            (0.08, -0.22),
            (0.45, -1.0),
        ]
    )
    square_half = 0.74
    return (
        ((_circle(0.92), True),),
        ((_regular_polygon(3) + np.array([0.0, 0.2]), True),),  # centred on its bounding box
        ((_regular_polygon(4, square_half * np.sqrt(2), 45.0), True),),
        ((_star(), True),),
        ((cross, True),),
        ((_heart(), True),),
        ((_circle(0.95), True), (_circle(0.8, (0.42, -0.18)), False)),
        ((arrow, True),),
        ((bolt, True),),
        ((_circle(0.95), True), (_circle(0.5), False)),
    )


_SHAPES = _shape_layers()
assert len(_SHAPES) == len(DEMO_CLASSES) == len(DEMO_TEXTURES)


@dataclass(frozen=True)
class ObjectGeometry:
    """Where the object sits, as fractions of the image side (so it is resolution-free)."""

    centre_x: float
    centre_y: float
    radius: float
    angle_deg: float


@dataclass(frozen=True)
class SurfaceAppearance:
    """The object's two colours (RGB in [0, 1]) and how its texture pattern is laid out."""

    base_rgb: tuple[float, float, float]
    pattern_rgb: tuple[float, float, float]
    period: float  # pattern period as a fraction of the image side
    pattern_angle_deg: float  # relative to the object, so the texture turns with it
    phase_u: float
    phase_v: float
    noise_seed: int


# Per style: object radius range, how far the centre may wander, rotation range (degrees).
_GEOMETRY_RANGES = {
    "Product": ((0.30, 0.38), 0.05, 20.0),
    "Neutral": ((0.30, 0.38), 0.05, 20.0),
    "Clipart": ((0.27, 0.37), 0.09, 30.0),
    "Art": ((0.25, 0.36), 0.11, 35.0),
    "Real World": ((0.22, 0.35), 0.14, 35.0),
}


def _sample_geometry(style: str, rng: np.random.Generator) -> ObjectGeometry:
    (radius_low, radius_high), wander, max_angle = _GEOMETRY_RANGES[style]
    radius = rng.uniform(radius_low, radius_high)
    # Keep most of the object inside the frame whatever the wander.
    reach = min(wander, 0.5 - 0.85 * radius)
    centre_x, centre_y = 0.5 + rng.uniform(-reach, reach, size=2)
    return ObjectGeometry(centre_x, centre_y, radius, rng.uniform(-max_angle, max_angle))


def _hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)), float(value))


# Per style: saturation range, value range of the light colour, value range of the dark colour.
# The two texture colours always differ in brightness, so the texture survives in grey too.
_PALETTES = {
    "Product": ((0.35, 0.75), (0.75, 0.95), (0.20, 0.45)),
    "Neutral": ((0.30, 0.70), (0.75, 0.95), (0.20, 0.45)),
    "Clipart": ((0.85, 1.00), (0.92, 1.00), (0.35, 0.55)),
    "Art": ((0.30, 0.65), (0.70, 0.92), (0.25, 0.45)),
    "Real World": ((0.18, 0.55), (0.55, 0.85), (0.15, 0.38)),
}


def _luma(rgb: Sequence[float]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _with_brightness_gap(
    light: tuple[float, float, float], dark: tuple[float, float, float], minimum_gap: float
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Tint `light` towards white and shade `dark` towards black until their lumas differ by
    `minimum_gap`: a saturated blue is "light" by HSV value yet dark to the eye, and a
    texture drawn in two equally bright colours would be invisible in grey."""
    gap = _luma(light) - _luma(dark)
    if gap >= minimum_gap:
        return light, dark
    missing = minimum_gap - gap
    # Split the missing contrast between the two, in proportion to the headroom each has.
    headroom_light, headroom_dark = 1.0 - _luma(light), _luma(dark)
    share = headroom_light / max(headroom_light + headroom_dark, 1e-6)
    tint = min(1.0, missing * share / max(headroom_light, 1e-6))
    shade = min(1.0, missing * (1.0 - share) / max(headroom_dark, 1e-6))
    light = tuple(c + tint * (1.0 - c) for c in light)
    dark = tuple(c * (1.0 - shade) for c in dark)
    return light, dark


def _sample_appearance(style: str, rng: np.random.Generator) -> SurfaceAppearance:
    saturation_range, light_range, dark_range = _PALETTES[style]
    hue = rng.random()
    # Colour is random per image, never per class: only shape and texture carry the label.
    light = _hsv(hue, rng.uniform(*saturation_range), rng.uniform(*light_range))
    dark_hue = hue + rng.uniform(-0.15, 0.15) + (0.5 if rng.random() < 0.3 else 0.0)
    dark = _hsv(dark_hue, rng.uniform(*saturation_range), rng.uniform(*dark_range))
    light, dark = _with_brightness_gap(light, dark, minimum_gap=0.3)
    base, pattern = (light, dark) if rng.random() < 0.5 else (dark, light)
    # Clipart simplifies: a coarser pattern with hard edges.
    period = rng.uniform(0.075, 0.1) * (1.4 if style == "Clipart" else 1.0)
    return SurfaceAppearance(
        base_rgb=base,
        pattern_rgb=pattern,
        period=period,
        pattern_angle_deg=rng.uniform(-15.0, 15.0),
        phase_u=rng.random(),
        phase_v=rng.random(),
        noise_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------------------------
# Textures: each pattern returns a signed distance-like value in pattern periods, positive where
# the pattern colour goes. u, v are object-frame coordinates in periods.


class _PatternCoordinates:
    """Where each pixel is in pattern space; the polar coordinates and the noise field are
    computed only for the patterns that use them (they are most of the cost otherwise)."""

    def __init__(self, u: np.ndarray, v: np.ndarray, appearance: SurfaceAppearance, side: int):
        self._centred_u, self._centred_v = u, v
        self._appearance = appearance
        self._side = side
        self.u = u + appearance.phase_u
        self.v = v + appearance.phase_v

    @functools.cached_property
    def radius(self) -> np.ndarray:
        """Distance from the object centre, in periods."""
        return np.hypot(self._centred_u, self._centred_v) + self._appearance.phase_u

    @functools.cached_property
    def angle(self) -> np.ndarray:
        """Angle around the object centre, in radians."""
        return np.arctan2(self._centred_v, self._centred_u) + self._appearance.phase_v

    @functools.cached_property
    def noise(self) -> np.ndarray:
        """A smooth random field in about [-1, 1] with blobs about one period wide."""
        blobs_across = max(3, round(1.0 / (1.6 * self._appearance.period)))
        noise_rng = np.random.default_rng(self._appearance.noise_seed)
        return _smooth_noise(noise_rng, self._side, blobs_across)


def _fold(values: np.ndarray) -> np.ndarray:
    """Distance to the nearest half-integer line, in [0, 0.5] (0 on the line)."""
    return np.abs(values - np.floor(values) - 0.5)


def _stripes(c: _PatternCoordinates) -> np.ndarray:
    return 0.25 - _fold(c.u)


def _dots(c: _PatternCoordinates) -> np.ndarray:
    staggered_u = c.u + 0.5 * np.floor(c.v)
    return 0.28 - np.hypot(_fold(staggered_u), _fold(c.v))


def _zigzag(c: _PatternCoordinates) -> np.ndarray:
    return 0.22 - _fold(c.v + 0.9 * 2.0 * _fold(0.6 * c.u))


def _checks(c: _PatternCoordinates) -> np.ndarray:
    scale = 0.6  # squares of 0.83 periods: bigger than the stripes, so the two look different
    a = c.u * scale - np.floor(c.u * scale) - 0.5
    b = c.v * scale - np.floor(c.v * scale) - 0.5
    return np.sign(a * b) * np.minimum(np.abs(a), np.abs(b)) / scale


def _rings(c: _PatternCoordinates) -> np.ndarray:
    return 0.25 - _fold(c.radius)


def _blotches(c: _PatternCoordinates) -> np.ndarray:
    return 0.4 * c.noise


def _waves(c: _PatternCoordinates) -> np.ndarray:
    return 0.22 - _fold(c.v + 0.35 * np.sin(2.0 * np.pi * 0.4 * c.u))


def _grid(c: _PatternCoordinates) -> np.ndarray:
    return 0.13 - np.minimum(_fold(c.u), _fold(c.v))


def _bricks(c: _PatternCoordinates) -> np.ndarray:
    height, width = 0.6, 1.2
    rows = c.v / height
    columns = c.u / width + 0.5 * np.floor(rows)
    to_mortar = np.minimum((0.5 - _fold(rows)) * height, (0.5 - _fold(columns)) * width)
    return 0.1 - to_mortar


def _rays(c: _PatternCoordinates) -> np.ndarray:
    rays = 14
    # Angular distance converted to periods at this radius, so edges stay equally sharp.
    return (0.25 - _fold(c.angle * rays / (2.0 * np.pi))) * (2.0 * np.pi * c.radius / rays)


_PATTERNS: tuple[Callable[[_PatternCoordinates], np.ndarray], ...] = (
    _stripes,
    _dots,
    _zigzag,
    _checks,
    _rings,
    _blotches,
    _waves,
    _grid,
    _bricks,
    _rays,
)


# ----------------------------------------------------------------------------------------------
# Rendering


@functools.lru_cache(maxsize=8)
def _pixel_grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    coordinates = np.arange(side, dtype=np.float32) + 0.5
    return np.meshgrid(coordinates, coordinates)


def _smooth_noise(rng: np.random.Generator, side: int, cells: int, channels: int = 1) -> np.ndarray:
    """A random field in about [-1, 1] with `cells` blobs across the image (side x side[xC])."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, channels)).astype(np.float32)
    field = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    return field if channels > 1 else field.reshape(side, side)


def _shape_mask(shape_class: int, geometry: ObjectGeometry, side: int) -> np.ndarray:
    """Anti-aliased coverage of the shape, float32 in [0, 1], side x side."""
    angle = np.deg2rad(geometry.angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([geometry.centre_x, geometry.centre_y]) * side
    mask = np.zeros((side, side), np.uint8)
    subpixel_bits = 4
    for polygon, filled in _SHAPES[shape_class]:
        points = polygon @ rotation.T * (geometry.radius * side) + centre
        fixed_point = np.round(points * (1 << subpixel_bits)).astype(np.int32)
        cv2.fillPoly(mask, [fixed_point], 255 if filled else 0, cv2.LINE_AA, subpixel_bits)
    return mask.astype(np.float32) / 255.0


def _texture_coverage(
    texture_class: int,
    geometry: ObjectGeometry,
    appearance: SurfaceAppearance,
    side: int,
    hard_edges: bool = False,
) -> np.ndarray:
    """Where the pattern colour goes, float32 in [0, 1], in the object's (rotated) frame."""
    x, y = _pixel_grid(side)
    period = appearance.period * side
    dx = (x - geometry.centre_x * side) / period
    dy = (y - geometry.centre_y * side) / period
    angle = np.deg2rad(geometry.angle_deg + appearance.pattern_angle_deg)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    signed = _PATTERNS[texture_class](_PatternCoordinates(u, v, appearance, side))
    # About one supersampled pixel of soft edge, before the area downsampling smooths it further.
    edge = (0.2 if hard_edges else 1.2) / period
    return np.clip(0.5 + signed / edge, 0.0, 1.0).astype(np.float32)


def _paint(
    coverage: np.ndarray, base_rgb: Sequence[float], pattern_rgb: Sequence[float]
) -> np.ndarray:
    base = np.asarray(base_rgb, np.float32)
    pattern = np.asarray(pattern_rgb, np.float32)
    return base + coverage[..., None] * (pattern - base)


def _over(background: np.ndarray, foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return background + alpha[..., None] * (foreground - background)


def _shifted_blurred(mask: np.ndarray, dx: float, dy: float, sigma: float) -> np.ndarray:
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(mask, shift, mask.shape[::-1], borderValue=0.0)
    return cv2.GaussianBlur(moved, (0, 0), sigma)


def _render_product(mask, surface, rng, side):
    """Catalogue photo: the object alone, centred on white, with a soft shadow below it."""
    x, y = _pixel_grid(side)
    whiteness = rng.uniform(0.93, 1.0)
    vignette = 1.0 - 0.06 * ((x / side - 0.5) ** 2 + (y / side - 0.5) ** 2)
    background = np.repeat((whiteness * vignette)[..., None], 3, axis=2)
    shadow = _shifted_blurred(mask, 0.02 * side, 0.05 * side, 0.035 * side)
    background *= 1.0 - rng.uniform(0.25, 0.4) * shadow[..., None]
    # A gentle top-to-bottom light falloff, as under a studio softbox.
    lighting = 1.06 - 0.12 * (y / side)
    return _over(background, surface * lighting[..., None], mask)


def _render_clipart(mask, surface, rng, side):
    """Flat saturated colours, thick dark outline, plain background, a cartoon highlight."""
    if rng.random() < 0.5:
        background_rgb = (1.0, 1.0, 1.0)
    else:
        background_rgb = _hsv(rng.random(), rng.uniform(0.15, 0.35), rng.uniform(0.95, 1.0))
    image = np.empty((side, side, 3), np.float32)
    image[:] = background_rgb
    image = _over(image, surface, mask)
    if rng.random() < 0.6:
        x, y = _pixel_grid(side)
        centre_x, centre_y = np.average(x, weights=mask), np.average(y, weights=mask)
        spread = np.sqrt(mask.sum() / np.pi)
        highlight = np.zeros((side, side), np.float32)
        cv2.ellipse(
            highlight,
            (int(centre_x - 0.4 * spread), int(centre_y - 0.45 * spread)),
            (max(1, int(0.28 * spread)), max(1, int(0.13 * spread))),
            -35.0,
            0.0,
            360.0,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        image = _over(image, np.ones_like(image), 0.7 * highlight * mask)
    thickness = max(3, round(0.045 * side)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (thickness, thickness))
    outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, kernel)
    ink = _hsv(rng.random(), 0.6, rng.uniform(0.0, 0.18))
    return _over(image, np.broadcast_to(np.float32(ink), image.shape), np.clip(outline, 0, 1))


def _render_real_world(mask, surface, rng, side):
    """Photo-like: shaded 3-D-looking object, cast shadow, blurred cluttered scene, sensor noise."""
    # A scene: wall above a table edge, uneven lighting, out-of-focus clutter. It is all
    # blurred, so it is built at a quarter of the pixels and enlarged.
    scene_side = side // 2
    x, y = _pixel_grid(scene_side)
    wall = np.float32(_hsv(rng.random(), rng.uniform(0.03, 0.25), rng.uniform(0.45, 0.9)))
    table = np.float32(_hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.7)))
    horizon = (
        rng.uniform(0.45, 0.8) + rng.uniform(-0.15, 0.15) * (x / scene_side - 0.5)
    ) * scene_side
    below = np.clip((y - horizon) / (0.02 * scene_side), 0.0, 1.0)
    background = wall + below[..., None] * (table - wall)
    # Uneven light: mostly brightness, a little colour.
    brightness = 0.2 * _smooth_noise(rng, scene_side, 3)[..., None]
    background *= 1.0 + brightness + 0.05 * _smooth_noise(rng, scene_side, 3, 3)
    for _ in range(rng.integers(2, 6)):
        clutter = _hsv(rng.random(), rng.uniform(0.05, 0.4), rng.uniform(0.15, 0.9))
        centre = tuple(int(c) for c in rng.uniform(0, scene_side, size=2))
        axes = tuple(int(a) for a in rng.uniform(0.05, 0.2, size=2) * scene_side)
        cv2.ellipse(background, centre, axes, rng.uniform(0, 180), 0, 360, clutter, -1)
    background = cv2.GaussianBlur(background, (0, 0), rng.uniform(0.02, 0.035) * scene_side)
    background = cv2.resize(background, (side, side), interpolation=cv2.INTER_LINEAR)

    # Shading: treat the mask as a rounded slab (height from the distance to its edge) lit
    # from the upper side, with a specular highlight.
    light_angle = rng.uniform(-2.6, -0.6)  # from above, left to right
    light = np.array([np.cos(light_angle), np.sin(light_angle), 1.1])
    light /= np.linalg.norm(light)
    inside = (mask > 0.5).astype(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    depth = np.clip(distance / (0.08 * side), 0.0, 1.0)
    height = np.sqrt(1.0 - (1.0 - depth) ** 2) * (0.08 * side)
    height = cv2.GaussianBlur(height, (0, 0), 0.01 * side + 0.5)
    gradient_y, gradient_x = np.gradient(height)
    normal_length = np.sqrt(gradient_x**2 + gradient_y**2 + 1.0)
    lambert = (-gradient_x * light[0] - gradient_y * light[1] + light[2]) / normal_length
    lambert = np.clip(lambert, 0.0, 1.0)
    shaded = surface * (0.35 + 0.75 * lambert[..., None]) + 0.35 * (lambert**24)[..., None]

    shadow = _shifted_blurred(
        mask, -light[0] * 0.08 * side, -light[1] * 0.08 * side + 0.03 * side, 0.03 * side
    )
    background = background * (1.0 - 0.5 * shadow[..., None])
    softened_mask = cv2.GaussianBlur(mask, (0, 0), 0.6)
    image = _over(background, shaded, softened_mask)
    # Camera: a colour cast and a darker periphery (sensor noise is added at output size).
    image = image * np.float32(1.0 + rng.uniform(-0.08, 0.08, size=3))
    x, y = _pixel_grid(side)
    vignette = 1.0 - 0.35 * ((x / side - 0.5) ** 2 + (y / side - 0.5) ** 2)
    return image * vignette[..., None]


@functools.lru_cache(maxsize=8)
def _canvas_weave(side: int) -> np.ndarray:
    """The regular over-under relief of woven canvas, in [-1, 1]."""
    x, y = _pixel_grid(side)
    return np.sin(x * (2.0 * np.pi / 3.0)) * np.sin(y * (2.0 * np.pi / 3.0))


def _render_art(mask, surface, rng, side):
    """Painting: short brush strokes, their colour taken from an underpainting, on canvas."""
    # Two washes of neighbouring hues, as a painter's background usually is.
    wash_hue = rng.random()
    wash_a = np.float32(_hsv(wash_hue, rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.9)))
    wash_b = np.float32(_hsv(wash_hue + rng.uniform(-0.2, 0.2), 0.35, rng.uniform(0.4, 0.9)))
    blend = 0.5 + 0.5 * _smooth_noise(rng, side, 3)
    underpainting = _over(np.broadcast_to(wash_a, (side, side, 3)), wash_b, blend)
    underpainting = _over(underpainting, surface, mask)

    canvas_rgb = np.float32(_hsv(rng.uniform(0.08, 0.13), rng.uniform(0.1, 0.25), 0.92))
    weave = _canvas_weave(side)
    grain = 0.05 * weave + 0.04 * rng.standard_normal((side, side)).astype(np.float32)
    canvas = canvas_rgb * (1.0 + grain[..., None])
    painting = 0.25 * canvas + 0.75 * cv2.GaussianBlur(underpainting, (0, 0), 0.01 * side)
    painting = (np.clip(painting, 0.0, 1.0) * 255.0).astype(np.uint8)

    # Big loose strokes everywhere, then small dense ones over the object, all leaning in one
    # direction as one hand would paint them.
    stroke_direction = rng.uniform(0.0, np.pi)
    object_pixels = np.flatnonzero(mask.ravel() > 0.5)
    passes = [  # (stroke count, length, width as fractions of the side, only on the object?)
        (side * side // 110, 0.07, 0.03, False),
        (len(object_pixels) // 14, 0.035, 0.016, True),
    ]
    for count, length, width, on_object in passes:
        if not on_object:
            positions = rng.uniform(0, side, size=(count, 2))
        elif count > 0:
            chosen = rng.choice(object_pixels, size=count)
            positions = np.stack([chosen % side, chosen // side], axis=1) + 0.5
        else:
            continue
        angles = stroke_direction + rng.normal(0.0, 0.45, size=count)
        lengths = length * side * rng.uniform(0.6, 1.4, size=count)
        widths = np.maximum(1, np.round(width * side * rng.uniform(0.7, 1.3, size=count)))
        jitter = rng.normal(0.0, 0.05, size=(count, 3))
        half_strokes = np.stack([np.cos(angles), np.sin(angles)], axis=1) * (lengths[:, None] / 2)
        pixels = np.clip(positions.astype(int), 0, side - 1)
        colours = underpainting[pixels[:, 1], pixels[:, 0]] + jitter
        colours = np.clip(colours, 0.0, 1.0) * 255.0
        starts = np.round(positions - half_strokes).astype(int)
        stops = np.round(positions + half_strokes).astype(int)
        # Everything is computed above in bulk; the loop only draws (plain Python values are
        # what cv2.line takes fastest).
        for start, stop, colour, thickness in zip(
            starts.tolist(),
            stops.tolist(),
            colours.tolist(),
            widths.astype(int).tolist(),
            strict=True,
        ):
            cv2.line(painting, start, stop, colour, thickness, cv2.LINE_AA)
    # Paint takes up the canvas texture a little.
    return painting.astype(np.float32) / 255.0 * (1.0 + 0.6 * grain[..., None])


def _render_neutral(mask, surface, rng, side):
    """Plain: the textured shape on an even light grey, nothing else (for cue conflicts)."""
    background = np.full((side, side, 3), rng.uniform(0.78, 0.86), np.float32)
    return _over(background, surface, mask)


_STYLE_RENDERERS = {
    "Art": _render_art,
    "Clipart": _render_clipart,
    "Product": _render_product,
    "Real World": _render_real_world,
    "Neutral": _render_neutral,
}
_SENSOR_NOISE = {"Real World": 0.025}


def _canonical_style(style: str) -> str:
    key = style.replace("_", " ").strip().lower()
    for known in RENDER_STYLES:
        if known.lower() == key:
            return known
    raise ValueError(f"unknown style {style!r}; valid choices: {list(RENDER_STYLES)}")


def _check_class(index: int, what: str) -> None:
    if not 0 <= index < len(DEMO_CLASSES):
        raise ValueError(f"{what}={index} out of range; valid: 0..{len(DEMO_CLASSES) - 1}")


def _render(
    shape_class: int,
    texture_class: int,
    style: str,
    geometry: ObjectGeometry,
    appearance: SurfaceAppearance,
    rng: np.random.Generator,
    image_size: int,
) -> np.ndarray:
    _check_class(shape_class, "shape_class")
    _check_class(texture_class, "texture_class")
    style = _canonical_style(style)
    side = image_size * _SUPERSAMPLE
    mask = _shape_mask(shape_class, geometry, side)
    coverage = _texture_coverage(
        texture_class, geometry, appearance, side, hard_edges=style == "Clipart"
    )
    surface = _paint(coverage, appearance.base_rgb, appearance.pattern_rgb)
    image = _STYLE_RENDERERS[style](mask, surface, rng, side)
    image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    if style in _SENSOR_NOISE:
        noise = rng.normal(0.0, _SENSOR_NOISE[style], size=image.shape).astype(np.float32)
        image = image + noise
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_object(
    shape_class: int, texture_class: int, style: str, rng: np.random.Generator, image_size: int
) -> np.ndarray:
    """Render one image: the shape of `shape_class` filled with the texture of `texture_class`.

    Args:
        shape_class: index into `DEMO_CLASSES` whose shape is drawn.
        texture_class: index into `DEMO_CLASSES` (texture `DEMO_TEXTURES[texture_class]`) whose
            surface pattern fills it; equal to `shape_class` for a regular demo image.
        style: one of `RENDER_STYLES` (a domain name, `Real_World` also accepted, or "Neutral").
        rng: source of all randomness (position, scale, rotation, colours, background, ...).
        image_size: side of the square output image in pixels.

    Returns:
        An image_size x image_size x 3 uint8 RGB array.
    """
    style = _canonical_style(style)
    geometry = _sample_geometry(style, rng)
    appearance = _sample_appearance(style, rng)
    return _render(shape_class, texture_class, style, geometry, appearance, rng, image_size)


# ----------------------------------------------------------------------------------------------
# Writing the data sets


def _check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= len(DEMO_CLASSES):
        raise ValueError(
            f"num_classes={num_classes} is not supported by the demo generator; "
            f"use 1..{len(DEMO_CLASSES)} (classes: {', '.join(DEMO_CLASSES)})"
        )


def _check_positive(**settings: int) -> None:
    for name, value in settings.items():
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")


def generate_officehome_demo(
    root: str | Path,
    *,
    num_classes: int = 6,
    images_per_class: int = 40,
    image_size: int = 96,
    seed: int = 0,
    domains: Sequence[str] = DEMO_DOMAINS,
) -> Path:
    """Write an Office-Home-like set to `<root>/<Domain>/<Class>/<NNNNN>.jpg` and return root.

    Class k is the shape `DEMO_CLASSES[k]` with texture `DEMO_TEXTURES[k]`; each domain is a
    drawing style. Files are written in place (existing files with the same names are
    overwritten); use `ensure_officehome_demo` for a cached, atomically created copy.

    Args:
        root: output folder (created if needed).
        num_classes: the first `num_classes` of `DEMO_CLASSES` (1..10).
        images_per_class: images per class and domain, numbered 00001, 00002, ...
        image_size: side of the square images in pixels.
        seed: base seed; each image has its own stream, so counts and domain selection do not
            change the images that are generated.
        domains: domain folders to write; names from `DEMO_DOMAINS`, `Real_World` also accepted
            (the folder then carries that spelling).
    """
    _check_num_classes(num_classes)
    _check_positive(images_per_class=images_per_class, image_size=image_size)
    root = Path(root)
    for domain in domains:
        style = _canonical_style(domain)
        if style not in DEMO_DOMAINS:
            raise ValueError(f"domain {domain!r} is not a demo domain; use {list(DEMO_DOMAINS)}")
        domain_index = DEMO_DOMAINS.index(style)
        for class_index, class_name in enumerate(DEMO_CLASSES[:num_classes]):
            class_dir = root / domain / class_name
            class_dir.mkdir(parents=True, exist_ok=True)
            for number in range(1, images_per_class + 1):
                rng = np.random.default_rng(
                    [_OFFICEHOME_STREAM, seed, domain_index, class_index, number]
                )
                image = render_object(class_index, class_index, style, rng, image_size)
                Image.fromarray(image).save(class_dir / f"{number:05d}.jpg", quality=JPEG_QUALITY)
    return root


def generate_cue_conflict_demo(
    root: str | Path,
    *,
    num_classes: int = 6,
    images_per_pair: int = 10,
    image_size: int = 96,
    seed: int = 0,
    style: str = "Neutral",
) -> Path:
    """Write cue-conflict images to `<root>/<shape>/<shape><i>-<texture><j>.png`; return root.

    Every (shape class, texture class) pair gets `images_per_pair` images, including the pairs
    where both agree (excluded from shape bias, as in Geirhos et al.'s set). As there, `i`
    numbers the shape instance and `j` the texture instance: `Circle3-Star3.png` and
    `Circle3-Heart3.png` share the same circle (position, size, rotation) and
    `Circle3-Star3.png` and `Cross3-Star3.png` the same star texture (colours, period, phase).

    Args:
        root: output folder (created if needed).
        num_classes: the first `num_classes` of `DEMO_CLASSES` (1..10).
        images_per_pair: images per (shape, texture) pair; i = j = 1..images_per_pair.
        image_size: side of the square images in pixels.
        seed: base seed.
        style: rendering style, "Neutral" (plain grey background) or a demo domain name.
    """
    _check_num_classes(num_classes)
    _check_positive(images_per_pair=images_per_pair, image_size=image_size)
    style = _canonical_style(style)
    style_index = RENDER_STYLES.index(style)
    root = Path(root)
    classes = DEMO_CLASSES[:num_classes]
    for shape_index, shape_name in enumerate(classes):
        shape_dir = root / shape_name
        shape_dir.mkdir(parents=True, exist_ok=True)
        for number in range(1, images_per_pair + 1):
            stream = [_CUE_CONFLICT_STREAM, seed, style_index]
            geometry = _sample_geometry(
                style, np.random.default_rng([*stream, 0, shape_index, number])
            )
            for texture_index, texture_name in enumerate(classes):
                appearance = _sample_appearance(
                    style, np.random.default_rng([*stream, 1, texture_index, number])
                )
                rng = np.random.default_rng([*stream, 2, shape_index, texture_index, number])
                image = _render(
                    shape_index, texture_index, style, geometry, appearance, rng, image_size
                )
                name = f"{shape_name}{number}-{texture_name}{number}.png"
                Image.fromarray(image).save(shape_dir / name)
    return root


def parse_cue_conflict_name(file_name: str) -> tuple[str, int, str, int]:
    """Split `<shape><i>-<texture><j>.png` into (shape, i, texture, j)."""
    match = CUE_CONFLICT_NAME.match(Path(file_name).name)
    if match is None:
        raise ValueError(f"{file_name!r} is not a cue-conflict name <shape><i>-<texture><j>.png")
    return match["shape"], int(match["i"]), match["texture"], int(match["j"])


# ----------------------------------------------------------------------------------------------
# Cache: generate on first use, atomically


def default_cache_dir() -> Path:
    """`$STYLEBENCH_DATA_DIR` if set, else `~/.cache/stylebench`."""
    configured = os.environ.get("STYLEBENCH_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "stylebench"


def _resolved_settings(generator: Callable[..., Path], settings: dict) -> dict:
    """The generator's full settings (defaults filled in) as JSON-ready values."""
    try:
        bound = inspect.signature(generator).bind(None, **settings)
    except TypeError as error:
        raise TypeError(f"{generator.__name__}: {error}") from None
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    resolved.pop("root")
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in resolved.items()}


def _discard_tree(path: Path) -> None:
    """Delete a folder that another process may be deleting or replacing at the same time."""
    trash = path.with_name(f".{path.name}.discard-{os.getpid()}-{time.monotonic_ns()}")
    try:
        # Renaming first makes the removal atomic for everyone else looking at `path`.
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _ensure_generated(
    kind: str, generator: Callable[..., Path], cache_dir: str | Path | None, settings: dict
) -> Path:
    resolved = _resolved_settings(generator, settings)
    record = {"generator": kind, "version": DEMO_DATA_VERSION, **resolved}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    cache_root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    target = cache_root / f"{kind}_demo-{digest}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        # A tree without its marker was not made by this function (or was damaged): rebuild it.
        _discard_tree(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_root))
    try:
        generator(
            staging, **{k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items()}
        )
        (staging / COMPLETE_MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            # Another process (e.g. another DDP rank) finished first; its copy is identical.
            if not (target / COMPLETE_MARKER).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_officehome_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The Office-Home demo for these settings, generated into the cache on first use.

    Args:
        cache_dir: cache folder; default `$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`.
        **settings: keyword arguments of `generate_officehome_demo` (not `root`).

    Returns:
        `<cache_dir>/officehome_demo-<hash of settings>`, complete (holds a `.complete` marker
        with the settings). Safe to call from several processes at once.
    """
    return _ensure_generated("officehome", generate_officehome_demo, cache_dir, settings)


def ensure_cue_conflict_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The cue-conflict demo for these settings, generated into the cache on first use.

    Same contract as `ensure_officehome_demo`, with the settings of
    `generate_cue_conflict_demo`; returns `<cache_dir>/cue_conflict_demo-<hash>`.
    """
    return _ensure_generated("cue_conflict", generate_cue_conflict_demo, cache_dir, settings)


# ----------------------------------------------------------------------------------------------
# Sample grids and command line


def _first_image(folder: Path, pattern: str) -> np.ndarray | None:
    files = sorted(folder.glob(pattern))
    return np.asarray(Image.open(files[0]).convert("RGB")) if files else None


def _save_grid(
    cells: list[list[np.ndarray | None]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    output: str | Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    rows, columns = len(cells), len(cells[0])
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.5 * columns + 0.8, 1.5 * rows + 0.6), squeeze=False
    )
    for row, (row_cells, row_label) in enumerate(zip(cells, row_labels, strict=True)):
        for column, image in enumerate(row_cells):
            axis = axes[row][column]
            if image is not None:
                axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(column_labels[column], fontsize=8)
            if column == 0:
                axis.set_ylabel(row_label, fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def save_officehome_grid(root: str | Path, output: str | Path, samples_per_class: int = 1) -> Path:
    """Save a PNG of an Office-Home-layout folder: rows = domains, columns = classes."""
    root = Path(root)
    domains = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {p.name for p in (root / domains[0]).iterdir() if p.is_dir()}
    # Demo classes in generation order, any others after them.
    classes = [c for c in DEMO_CLASSES if c in found] + sorted(found - set(DEMO_CLASSES))
    cells, column_labels = [], []
    for class_name in classes:
        texture = (
            DEMO_TEXTURES[DEMO_CLASSES.index(class_name)] if class_name in DEMO_CLASSES else ""
        )
        column_labels += [f"{class_name}\n({texture})"] * samples_per_class
    for domain in domains:
        row = []
        for class_name in classes:
            files = sorted((root / domain / class_name).glob("*.jpg"))[:samples_per_class]
            images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
            row += images + [None] * (samples_per_class - len(images))
        cells.append(row)
    return _save_grid(cells, domains, column_labels, f"Office-Home demo: {root}", output)


def save_cue_conflict_grid(root: str | Path, output: str | Path) -> Path:
    """Save a PNG of a cue-conflict folder: rows = shape classes, columns = texture classes."""
    root = Path(root)
    shapes = [c for c in DEMO_CLASSES if (root / c).is_dir()]
    cells = [
        [_first_image(root / shape, f"{shape}1-{texture}1.png") for texture in shapes]
        for shape in shapes
    ]
    column_labels = [f"texture: {DEMO_TEXTURES[DEMO_CLASSES.index(c)]}\n({c})" for c in shapes]
    row_labels = [f"shape: {c}" for c in shapes]
    return _save_grid(cells, row_labels, column_labels, f"Cue-conflict demo: {root}", output)


def main(args: Sequence[str] | None = None) -> None:
    """Command line: generate a demo set into a folder, optionally with a sample grid PNG."""
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.demo_data", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("kind", choices=["officehome", "cue_conflict"])
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument(
        "--images", type=int, default=None, help="per class and domain / per pair (40 / 10)"
    )
    parser.add_argument("--style", default="Neutral", help="cue_conflict only: rendering style")
    parser.add_argument("--grid", default=None, help="also save a sample grid PNG here")
    parser.add_argument("--grid-samples", type=int, default=1, help="officehome: images per cell")
    options = parser.parse_args(args)
    common = {"num_classes": options.num_classes, "image_size": options.image_size}
    started = time.perf_counter()
    if options.kind == "officehome":
        root = generate_officehome_demo(
            options.root, images_per_class=options.images or 40, seed=options.seed, **common
        )
    else:
        root = generate_cue_conflict_demo(
            options.root,
            images_per_pair=options.images or 10,
            seed=options.seed,
            style=options.style,
            **common,
        )
    count = sum(1 for p in Path(root).rglob("*") if p.suffix in (".jpg", ".png"))
    print(f"wrote {count} images to {root} in {time.perf_counter() - started:.1f} s")
    if options.grid:
        if options.kind == "officehome":
            grid = save_officehome_grid(root, options.grid, options.grid_samples)
        else:
            grid = save_cue_conflict_grid(root, options.grid)
        print(f"grid: {grid}")


if __name__ == "__main__":
    main()
