"""`python -m experiments.stylize` with random AdaIN weights: layout, seeding, resuming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.data.adain import adain_decoder, vgg19_normalised
from experiments.stylize import main, style_for
from tests.helpers.trees import write_jpeg


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("adain")
    torch.manual_seed(0)
    torch.save(vgg19_normalised(depth=None).state_dict(), folder / "vgg_normalised.pth")
    torch.save(adain_decoder().state_dict(), folder / "decoder.pth")
    return str(folder / "vgg_normalised.pth"), str(folder / "decoder.pth")


def make_content(root: Path) -> list[Path]:
    """A multi-domain tree (`<Domain>/<Class>/<image>`) with a PNG, JPEGs and stray files."""
    files = [Path("Art/Bike/00001.jpg"), Path("Art/Mug/00002.jpg"), Path("Real World/Bike/a.jpg")]
    for seed, relative in enumerate(files):
        write_jpeg(root / relative, seed, size=(36, 28))
    Image.new("RGB", (20, 20), (200, 10, 10)).save(root / "Art/Mug/flat.png")
    (root / "Art/.DS_Store").write_bytes(b"\x00")
    return [*files, Path("Art/Mug/flat.png")]


def run(tmp_path: Path, weights, *extra: str) -> dict[str, int]:
    vgg, decoder = weights
    return main(
        [
            "--content", str(tmp_path / "content"),
            "--styles", str(tmp_path / "styles"),
            "--output", str(tmp_path / "out"),
            "--vgg", vgg,
            "--decoder", decoder,
            "--content-size", "32",
            "--style-size", "32",
            "--workers", "0",
            "--device", "cpu",
            *extra,
        ]
    )  # fmt: skip


def test_output_mirrors_input_and_second_run_skips(tmp_path, weights) -> None:
    expected = make_content(tmp_path / "content")
    for seed in range(3):
        write_jpeg(tmp_path / "styles" / f"painter{seed}" / f"{seed}.jpg", 50 + seed)
    assert run(tmp_path, weights) == {"written": 4, "skipped": 0}
    out = tmp_path / "out"
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == sorted(expected)
    for relative in expected:
        with (
            Image.open(out / relative) as image,
            Image.open(tmp_path / "content" / relative) as src,
        ):
            assert image.size == src.size and image.format == src.format
    mtimes = {p: (out / p).stat().st_mtime_ns for p in expected}
    # a killed run's temporary is cleaned up and its image redone; finished ones are skipped
    (out / expected[0]).unlink()
    (out / expected[0]).with_name(".00001.jpg.tmp-123").write_bytes(b"half")
    assert run(tmp_path, weights, "--workers", "1") == {"written": 1, "skipped": 3}
    assert {p: (out / p).stat().st_mtime_ns for p in expected[1:]} == {
        p: mtimes[p] for p in expected[1:]
    }
    assert not list(out.rglob(".*.tmp-*"))


def test_style_choice_is_seeded_per_file() -> None:
    choices = [style_for(Path(f"Art/Bike/{i}.jpg"), 7, seed=0) for i in range(50)]
    assert choices == [style_for(Path(f"Art/Bike/{i}.jpg"), 7, seed=0) for i in range(50)]
    assert len(set(choices)) > 3
    assert choices != [style_for(Path(f"Art/Bike/{i}.jpg"), 7, seed=1) for i in range(50)]


def test_without_weights_names_the_files_and_their_source(tmp_path) -> None:
    make_content(tmp_path / "content")
    with pytest.raises(FileNotFoundError) as error:
        run(tmp_path, (str(tmp_path / "vgg_normalised.pth"), str(tmp_path / "decoder.pth")))
    message = str(error.value)
    assert "vgg_normalised.pth" in message and "decoder.pth" in message
    assert "github.com/naoto0804/pytorch-AdaIN" in message
