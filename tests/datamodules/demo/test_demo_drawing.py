"""Tests of the shared drawing library, and that both generators draw through it."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from datamodules.demo import drawing, render_object, render_texture
from datamodules.demo.dtd import DTD_DEMO_CLASSES
from datamodules.demo.objects import DEMO_TEXTURES

PHASES = np.linspace(-3.0, 3.0, 6001)


def test_pixel_grid_origins_and_sharing():
    x, y = drawing.pixel_grid(4)
    assert x[0].tolist() == [0.5, 1.5, 2.5, 3.5] and y[:, 0].tolist() == [0.5, 1.5, 2.5, 3.5]
    x, y = drawing.pixel_grid(4, origin=-2.0)
    assert x[0].tolist() == [-2.0, -1.0, 0.0, 1.0] and (y[:, 1] == x[0]).all()
    assert x.dtype == np.float32
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 7.0  # the cached grid is shared by every caller


def test_to_uint8_clips_and_rounds_halves_as_asked():
    values = np.array([0.5, 1.5, 2.5, -255.0, 510.0]) / 255.0
    assert drawing.to_uint8(values).tolist() == [1, 2, 3, 0, 255]
    assert drawing.to_uint8(values, rounding="half_even").tolist() == [0, 2, 2, 0, 255]


@pytest.mark.parametrize("offset", [0.0, 0.5, 0.25])
def test_line_distance(offset):
    distance = drawing.line_distance(PHASES, offset)
    nearest = np.round(PHASES - offset) + offset
    np.testing.assert_allclose(distance, np.abs(PHASES - nearest), atol=1e-12)
    assert distance.min() >= 0.0 and distance.max() <= 0.5


@pytest.mark.parametrize("width", [0.2, 0.5])
def test_stripes_cover_their_width(width):
    covered = drawing.hard_coverage(drawing.stripes(PHASES * 4.0, width=width, period=4.0))
    assert covered.mean() == pytest.approx(width, abs=0.01)
    assert covered[PHASES == 0.0].item() == 1.0  # centred on the lines at offset 0
    shifted = drawing.hard_coverage(drawing.stripes(PHASES, width=width, offset=0.5))
    assert shifted[PHASES == 0.0].item() == 0.0


def test_soft_coverage_ramps_over_the_edge():
    coverage = drawing.soft_coverage(np.array([-1.0, -0.25, 0.0, 0.25, 1.0]), 0.5)
    assert coverage.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def _plane(side: int = 400, period: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    coordinates = (np.arange(side) + 0.5) / side * 8.0 * period
    return np.meshgrid(coordinates, coordinates)


def test_grid_and_crosshatch_are_two_families_of_stripes():
    u, v = _plane()
    covered = drawing.hard_coverage(drawing.grid(u, v, width=0.2))
    assert covered.mean() == pytest.approx(1 - 0.8**2, abs=0.01)
    one_family = drawing.grid(u, u, width=0.2)  # the same lines twice: just stripes
    np.testing.assert_array_equal(one_family, drawing.stripes(u, width=0.2))


def test_checks_parity_and_signed_field_are_complementary_boards():
    u, v = _plane()
    away_from_edges = (drawing.line_distance(u * 2) > 0.05) & (drawing.line_distance(v * 2) > 0.05)
    parity = drawing.hard_coverage(drawing.checks(u, v, scale=1.0, parity=True))
    signed = drawing.hard_coverage(drawing.checks(u, v, scale=1.0))
    assert parity.mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(parity[away_from_edges], 1 - signed[away_from_edges])
    # Square (0, 0) is even, so not covered by the parity board; its neighbours are.
    assert drawing.checks(np.array(0.1), np.array(0.1), scale=1.0, parity=True) < 0
    assert drawing.checks(np.array(0.6), np.array(0.1), scale=1.0, parity=True) > 0


def test_dots_squared_distance_keeps_the_sign_and_rows_stagger_alike():
    u, v = _plane()
    exact = drawing.dots(u, v, radius=0.3)
    squared = drawing.dots(u, v, radius=0.3, squared_distance=True)
    np.testing.assert_array_equal(exact > 0, squared > 0)
    assert (exact > 0).mean() == pytest.approx(np.pi * 0.3**2, abs=0.01)
    alternate = drawing.dots(u, v, radius=0.3, alternate_rows=True)
    clear = np.abs(exact) > 1e-6
    np.testing.assert_array_equal((alternate > 0)[clear], (exact > 0)[clear])
    unshifted = drawing.dots(u, v, radius=0.3, row_shift=0.0)
    assert not np.array_equal(unshifted > 0, exact > 0)


def test_waves_and_zigzags_are_displaced_stripes():
    u, v = _plane()
    stripes = drawing.stripes(u, width=0.4)
    flat_wave = drawing.waves(u, 2 * np.pi * v, amplitude=0.0, width=0.4)
    flat_zigzag = drawing.zigzag(u, v, amplitude=0.0, width=0.4)
    np.testing.assert_array_equal(flat_wave, stripes)
    np.testing.assert_array_equal(flat_zigzag, stripes)
    # A displacement of a whole period gives the stripes back, a half period inverts them.
    np.testing.assert_allclose(
        drawing.waves(u, np.full_like(v, np.pi / 2), amplitude=1.0, width=0.4), stripes, atol=1e-9
    )
    half = drawing.zigzag(u, np.full_like(v, 0.25), amplitude=1.0, width=0.5)  # triangle 0.5
    inverted = drawing.stripes(u, width=0.5, offset=0.5)
    np.testing.assert_allclose(half, inverted, atol=1e-9)


def test_smooth_noise_is_upsampled_coarse_noise_of_either_distribution():
    def reference(coarse: np.ndarray) -> np.ndarray:
        return cv2.resize(coarse.astype(np.float32), (32, 32), interpolation=cv2.INTER_CUBIC)

    uniform = drawing.smooth_noise(np.random.default_rng(0), 32, 4)
    normal = drawing.smooth_noise(np.random.default_rng(0), 32, 4, distribution="normal")
    colour = drawing.smooth_noise(np.random.default_rng(0), 32, 4, channels=3)
    assert uniform.shape == normal.shape == (32, 32) and colour.shape == (32, 32, 3)
    assert uniform.dtype == normal.dtype == np.float32
    np.testing.assert_array_equal(
        uniform, reference(np.random.default_rng(0).uniform(-1.0, 1.0, (5, 5)))
    )
    np.testing.assert_array_equal(
        normal, reference(np.random.default_rng(0).standard_normal((5, 5)))
    )
    np.testing.assert_array_equal(
        colour, reference(np.random.default_rng(0).uniform(-1.0, 1.0, (5, 5, 3)))
    )


# drawing function -> (Office-Home texture, DTD class) drawn with it.
SHARED_PATTERNS = {
    "stripes": ("stripes", "stripes"),
    "dots": ("dots", "dots"),
    "checks": ("checks", "checks"),
    "rings": ("rings", "rings"),
    "waves": ("waves", "waves"),
    "grid": ("grid", "grid"),
    "zigzag": ("zigzag", "zigzags"),
    "blotches": ("blotches", "blobs"),
}


@pytest.mark.parametrize("function_name", SHARED_PATTERNS)
def test_both_generators_draw_with_the_shared_pattern(function_name, monkeypatch):
    """One implementation per pattern: each generator's texture calls the drawing function."""
    calls = []
    real = getattr(drawing, function_name)

    @functools.wraps(real)
    def counting(*args, **kwargs):
        calls.append(function_name)
        return real(*args, **kwargs)

    monkeypatch.setattr(drawing, function_name, counting)
    officehome_texture, dtd_class = SHARED_PATTERNS[function_name]
    texture = DEMO_TEXTURES.index(officehome_texture)
    render_object(0, texture, "Neutral", np.random.default_rng(0), 16)
    assert len(calls) == 1
    render_texture(DTD_DEMO_CLASSES.index(dtd_class), np.random.default_rng(0), 16)
    assert len(calls) == 2
