"""Textured objects: the image model of the generated Office-Home-like and cue-conflict sets.

Every image is one shape (`shapes.py`) whose surface carries one texture pattern
(`drawing.py`), rendered in one style (`styles.py`). Class k of the Office-Home demo is shape k
with texture k, so a model can learn either cue; a cue-conflict image takes its shape from one
class and its texture from another. Colours are random per image, never per class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import datamodules.demo.drawing as drawing
from datamodules.demo.shapes import DEMO_CLASSES, ObjectGeometry, sample_geometry, shape_mask
from datamodules.demo.styles import SENSOR_NOISE, canonical_style, render_style

# Texture k fills the shape of class k; cue-conflict file names label textures by class name.
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
# Part of the cache key of both sets: bump it whenever their rendering changes (here, in
# shapes.py, styles.py or the drawing.py functions they use), so stale caches are not reused.
DEMO_DATA_VERSION = 1


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


# Per style: saturation range, value range of the light colour, value range of the dark colour.
# The two texture colours always differ in brightness, so the texture survives in grey too.
_PALETTES = {
    "Product": ((0.35, 0.75), (0.75, 0.95), (0.20, 0.45)),
    "Neutral": ((0.30, 0.70), (0.75, 0.95), (0.20, 0.45)),
    "Clipart": ((0.85, 1.00), (0.92, 1.00), (0.35, 0.55)),
    "Art": ((0.30, 0.65), (0.70, 0.92), (0.25, 0.45)),
    "Real World": ((0.18, 0.55), (0.55, 0.85), (0.15, 0.38)),
}


def sample_appearance(style: str, rng: np.random.Generator) -> SurfaceAppearance:
    """Random colours and texture layout in the ranges of `style` (a canonical style name)."""
    saturation_range, light_range, dark_range = _PALETTES[style]
    hue = rng.random()
    # Colour is random per image, never per class: only shape and texture carry the label.
    light = drawing.hsv(hue, rng.uniform(*saturation_range), rng.uniform(*light_range))
    dark_hue = hue + rng.uniform(-0.15, 0.15) + (0.5 if rng.random() < 0.3 else 0.0)
    dark = drawing.hsv(dark_hue, rng.uniform(*saturation_range), rng.uniform(*dark_range))
    light, dark = drawing.with_brightness_gap(light, dark, minimum_gap=0.3)
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


class _PatternCoordinates:
    """Where each pixel is in pattern space (object frame, in periods); the polar coordinates
    and the noise field are computed only for the patterns that use them (they are most of the
    cost otherwise)."""

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
        return drawing.smooth_noise(noise_rng, self._side, blobs_across)


# These textures sit on half-integer lines of the pattern phase.
_LINES = 0.5
# Texture name -> signed field (periods) of the pattern colour; the pattern parameters are
# fixed per class, only their layout (period, angle, phase) is random per image.
_PATTERNS: dict[str, Callable[[_PatternCoordinates], np.ndarray]] = {
    "stripes": lambda c: drawing.stripes(c.u, width=0.5, offset=_LINES),
    "dots": lambda c: drawing.dots(c.u, c.v, radius=0.28, row_shift=0.5),
    "zigzag": lambda c: drawing.zigzag(c.v, 0.6 * c.u, amplitude=0.9, width=0.44, offset=_LINES),
    # Squares of 0.83 periods: bigger than the stripes, so the two look different.
    "checks": lambda c: drawing.checks(c.u, c.v, scale=0.6),
    "rings": lambda c: drawing.rings(c.radius, width=0.5, offset=_LINES),
    "blotches": lambda c: drawing.blotches(c.noise, gain=0.4),
    "waves": lambda c: drawing.waves(
        c.v, 2.0 * np.pi * 0.4 * c.u, amplitude=0.35, width=0.44, offset=_LINES
    ),
    "grid": lambda c: drawing.grid(c.u, c.v, width=0.26, offset=_LINES),
    "bricks": lambda c: drawing.bricks(c.u, c.v, height=0.6, width=1.2, mortar=0.2),
    "rays": lambda c: drawing.rays(c.angle, c.radius, count=14),
}
assert tuple(_PATTERNS) == DEMO_TEXTURES and len(DEMO_TEXTURES) == len(DEMO_CLASSES)


def _texture_coverage(
    texture_class: int,
    geometry: ObjectGeometry,
    appearance: SurfaceAppearance,
    side: int,
    hard_edges: bool = False,
) -> np.ndarray:
    """Where the pattern colour goes, float32 in [0, 1], in the object's (rotated) frame."""
    x, y = drawing.pixel_grid(side)
    period = appearance.period * side
    dx = (x - geometry.centre_x * side) / period
    dy = (y - geometry.centre_y * side) / period
    angle = np.deg2rad(geometry.angle_deg + appearance.pattern_angle_deg)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    pattern = _PATTERNS[DEMO_TEXTURES[texture_class]]
    signed = pattern(_PatternCoordinates(u, v, appearance, side))
    # About one supersampled pixel of soft edge, before the area downsampling smooths it further.
    return drawing.soft_coverage(signed, (0.2 if hard_edges else 1.2) / period)


def _check_class(index: int, what: str) -> None:
    if not 0 <= index < len(DEMO_CLASSES):
        raise ValueError(f"{what}={index} out of range; valid: 0..{len(DEMO_CLASSES) - 1}")


def render_image(
    shape_class: int,
    texture_class: int,
    style: str,
    geometry: ObjectGeometry,
    appearance: SurfaceAppearance,
    rng: np.random.Generator,
    image_size: int,
) -> np.ndarray:
    """Render one image from a given placement and appearance (see `render_object`); `rng`
    draws the rest (background, brush strokes, noise, ...)."""
    _check_class(shape_class, "shape_class")
    _check_class(texture_class, "texture_class")
    style = canonical_style(style)
    side = image_size * drawing.SUPERSAMPLE
    mask = shape_mask(shape_class, geometry, side)
    coverage = _texture_coverage(
        texture_class, geometry, appearance, side, hard_edges=style == "Clipart"
    )
    surface = drawing.paint(coverage, appearance.base_rgb, appearance.pattern_rgb)
    image = drawing.downsample(render_style(style, mask, surface, rng, side), image_size)
    if style in SENSOR_NOISE:
        noise = rng.normal(0.0, SENSOR_NOISE[style], size=image.shape).astype(np.float32)
        image = image + noise
    return drawing.to_uint8(image)


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
    style = canonical_style(style)
    geometry = sample_geometry(style, rng)
    appearance = sample_appearance(style, rng)
    return render_image(shape_class, texture_class, style, geometry, appearance, rng, image_size)


def check_num_classes(num_classes: int) -> None:
    """Raise ValueError unless 1 <= num_classes <= len(DEMO_CLASSES)."""
    if not 1 <= num_classes <= len(DEMO_CLASSES):
        raise ValueError(
            f"num_classes={num_classes} is not supported by the demo generator; "
            f"use 1..{len(DEMO_CLASSES)} (classes: {', '.join(DEMO_CLASSES)})"
        )


def check_positive(**settings: int) -> None:
    """Raise ValueError naming the first setting below 1."""
    for name, value in settings.items():
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
