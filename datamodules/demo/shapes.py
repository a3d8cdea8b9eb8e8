"""The shapes of the generated Office-Home-like and cue-conflict sets, and where they sit.

A shape is a list of (polygon, fill) layers in unit coordinates (within the unit circle, y
pointing down), drawn in order, so holes (Crescent, Ring) are a second layer. `ObjectGeometry`
places one in an image, as fractions of the image side, so it is resolution-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Office-Home-style folder names; class k is drawn as shape k (filled with texture k).
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
assert len(_SHAPES) == len(DEMO_CLASSES)


@dataclass(frozen=True)
class ObjectGeometry:
    """Where the object sits, as fractions of the image side (so it is resolution-free)."""

    centre_x: float
    centre_y: float
    radius: float
    angle_deg: float


# Per style: object radius range, how far the centre may wander, rotation range (degrees).
_GEOMETRY_RANGES = {
    "Product": ((0.30, 0.38), 0.05, 20.0),
    "Neutral": ((0.30, 0.38), 0.05, 20.0),
    "Clipart": ((0.27, 0.37), 0.09, 30.0),
    "Art": ((0.25, 0.36), 0.11, 35.0),
    "Real World": ((0.22, 0.35), 0.14, 35.0),
}


def sample_geometry(style: str, rng: np.random.Generator) -> ObjectGeometry:
    """A random placement of the object, in the ranges of `style` (a canonical style name)."""
    (radius_low, radius_high), wander, max_angle = _GEOMETRY_RANGES[style]
    radius = rng.uniform(radius_low, radius_high)
    # Keep most of the object inside the frame whatever the wander.
    reach = min(wander, 0.5 - 0.85 * radius)
    centre_x, centre_y = 0.5 + rng.uniform(-reach, reach, size=2)
    return ObjectGeometry(centre_x, centre_y, radius, rng.uniform(-max_angle, max_angle))


def shape_mask(shape_class: int, geometry: ObjectGeometry, side: int) -> np.ndarray:
    """Anti-aliased coverage of shape `DEMO_CLASSES[shape_class]`, float32 in [0, 1]."""
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
