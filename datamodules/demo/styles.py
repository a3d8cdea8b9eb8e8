"""The drawing styles of the generated Office-Home-like set (its domains) and the plain style
of the cue-conflict set: each puts a textured object into a scene and renders it.

A style renderer takes the object's coverage mask, its textured surface (both at the
supersampled size), a random generator and the side in pixels, and returns a float RGB image.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from datamodules.demo.drawing import hsv, over, pixel_grid, shifted_blurred, smooth_noise

DEMO_DOMAINS: tuple[str, ...] = ("Art", "Clipart", "Product", "Real World")
# "Neutral" is not a domain: a plain rendering for cue-conflict images.
RENDER_STYLES: tuple[str, ...] = (*DEMO_DOMAINS, "Neutral")
# Standard deviation of the noise added at output size, per style.
SENSOR_NOISE = {"Real World": 0.025}


def canonical_style(style: str) -> str:
    """The `RENDER_STYLES` spelling of a style (`Real_World`, any case, also accepted)."""
    key = style.replace("_", " ").strip().lower()
    for known in RENDER_STYLES:
        if known.lower() == key:
            return known
    raise ValueError(f"unknown style {style!r}; valid choices: {list(RENDER_STYLES)}")


def _render_product(mask, surface, rng, side):
    """Catalogue photo: the object alone, centred on white, with a soft shadow below it."""
    x, y = pixel_grid(side)
    whiteness = rng.uniform(0.93, 1.0)
    vignette = 1.0 - 0.06 * ((x / side - 0.5) ** 2 + (y / side - 0.5) ** 2)
    background = np.repeat((whiteness * vignette)[..., None], 3, axis=2)
    shadow = shifted_blurred(mask, 0.02 * side, 0.05 * side, 0.035 * side)
    background *= 1.0 - rng.uniform(0.25, 0.4) * shadow[..., None]
    # A gentle top-to-bottom light falloff, as under a studio softbox.
    lighting = 1.06 - 0.12 * (y / side)
    return over(background, surface * lighting[..., None], mask)


def _render_clipart(mask, surface, rng, side):
    """Flat saturated colours, thick dark outline, plain background, a cartoon highlight."""
    if rng.random() < 0.5:
        background_rgb = (1.0, 1.0, 1.0)
    else:
        background_rgb = hsv(rng.random(), rng.uniform(0.15, 0.35), rng.uniform(0.95, 1.0))
    image = np.empty((side, side, 3), np.float32)
    image[:] = background_rgb
    image = over(image, surface, mask)
    if rng.random() < 0.6:
        x, y = pixel_grid(side)
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
        image = over(image, np.ones_like(image), 0.7 * highlight * mask)
    thickness = max(3, round(0.045 * side)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (thickness, thickness))
    outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, kernel)
    ink = hsv(rng.random(), 0.6, rng.uniform(0.0, 0.18))
    return over(image, np.broadcast_to(np.float32(ink), image.shape), np.clip(outline, 0, 1))


def _render_real_world(mask, surface, rng, side):
    """Photo-like: shaded 3-D-looking object, cast shadow, blurred cluttered scene, sensor noise."""
    # A scene: wall above a table edge, uneven lighting, out-of-focus clutter. It is all
    # blurred, so it is built at a quarter of the pixels and enlarged.
    scene_side = side // 2
    x, y = pixel_grid(scene_side)
    wall = np.float32(hsv(rng.random(), rng.uniform(0.03, 0.25), rng.uniform(0.45, 0.9)))
    table = np.float32(hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.7)))
    horizon = (
        rng.uniform(0.45, 0.8) + rng.uniform(-0.15, 0.15) * (x / scene_side - 0.5)
    ) * scene_side
    below = np.clip((y - horizon) / (0.02 * scene_side), 0.0, 1.0)
    background = wall + below[..., None] * (table - wall)
    # Uneven light: mostly brightness, a little colour.
    brightness = 0.2 * smooth_noise(rng, scene_side, 3)[..., None]
    background *= 1.0 + brightness + 0.05 * smooth_noise(rng, scene_side, 3, 3)
    for _ in range(rng.integers(2, 6)):
        clutter = hsv(rng.random(), rng.uniform(0.05, 0.4), rng.uniform(0.15, 0.9))
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

    shadow = shifted_blurred(
        mask, -light[0] * 0.08 * side, -light[1] * 0.08 * side + 0.03 * side, 0.03 * side
    )
    background = background * (1.0 - 0.5 * shadow[..., None])
    softened_mask = cv2.GaussianBlur(mask, (0, 0), 0.6)
    image = over(background, shaded, softened_mask)
    # Camera: a colour cast and a darker periphery (sensor noise is added at output size).
    image = image * np.float32(1.0 + rng.uniform(-0.08, 0.08, size=3))
    x, y = pixel_grid(side)
    vignette = 1.0 - 0.35 * ((x / side - 0.5) ** 2 + (y / side - 0.5) ** 2)
    return image * vignette[..., None]


@functools.lru_cache(maxsize=8)
def _canvas_weave(side: int) -> np.ndarray:
    """The regular over-under relief of woven canvas, in [-1, 1]."""
    x, y = pixel_grid(side)
    return np.sin(x * (2.0 * np.pi / 3.0)) * np.sin(y * (2.0 * np.pi / 3.0))


def _render_art(mask, surface, rng, side):
    """Painting: short brush strokes, their colour taken from an underpainting, on canvas."""
    # Two washes of neighbouring hues, as a painter's background usually is.
    wash_hue = rng.random()
    wash_a = np.float32(hsv(wash_hue, rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.9)))
    wash_b = np.float32(hsv(wash_hue + rng.uniform(-0.2, 0.2), 0.35, rng.uniform(0.4, 0.9)))
    blend = 0.5 + 0.5 * smooth_noise(rng, side, 3)
    underpainting = over(np.broadcast_to(wash_a, (side, side, 3)), wash_b, blend)
    underpainting = over(underpainting, surface, mask)

    canvas_rgb = np.float32(hsv(rng.uniform(0.08, 0.13), rng.uniform(0.1, 0.25), 0.92))
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
    return over(background, surface, mask)


_STYLE_RENDERERS = {
    "Art": _render_art,
    "Clipart": _render_clipart,
    "Product": _render_product,
    "Real World": _render_real_world,
    "Neutral": _render_neutral,
}


def render_style(
    style: str, mask: np.ndarray, surface: np.ndarray, rng: np.random.Generator, side: int
) -> np.ndarray:
    """The object (`mask`, `surface`) rendered in `style` (a canonical name), side x side x 3."""
    return _STYLE_RENDERERS[style](mask, surface, rng, side)
