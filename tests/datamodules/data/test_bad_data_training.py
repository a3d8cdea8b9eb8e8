"""What training does with bad data: one error listing every scan problem, the bad-image policy
for every way a file fails (decompression bombs, non-UTF-8 names, symlink loops), list paths
confined to their root, and `check_data: true` with `skip`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.data.dataset import ImageSampleDataset, read_bad_images
from datamodules.data.extra_domains import ExtraDomain
from datamodules.data.image_io import BadImageError, load_rgb
from datamodules.data.layout import DatasetLayoutError, Sample
from datamodules.data.problems import DataProblemsError
from tests.helpers.bad_inputs import (
    make_class_mismatch,
    make_empty_domain,
    make_symlink_loop,
    undecodable_path,
    write_bomb,
)
from tests.helpers.trees import (
    build_officehome,
    small_officehome_tree,
    write_jpeg,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return small_officehome_tree(tmp_path / "officehome")


def test_the_datamodule_raises_one_error_listing_every_scan_problem(tree: Path) -> None:
    make_class_mismatch(tree)
    make_empty_domain(tree)
    make_symlink_loop(tree)  # must not stop the scan before the other problems are seen
    with pytest.raises(DataProblemsError) as raised:
        _ = build_officehome(tree).class_names
    message = str(raised.value)
    assert isinstance(raised.value, DatasetLayoutError)
    assert message.startswith("the data has problems (2 errors;")
    assert f"ERROR [class-mismatch] {tree / 'Clipart'}: domain 'Clipart' differs" in message
    assert f"ERROR [empty-domain] {tree / 'Product'}: domain 'Product' has no images" in message


@pytest.mark.parametrize("kind", ["decompression-bomb", "undecodable-name", "symlink-loop"])
def test_every_decode_failure_follows_the_bad_image_policy(tmp_path: Path, kind: str) -> None:
    good = tmp_path / "good.jpg"
    write_jpeg(good, seed=1)
    if kind == "decompression-bomb":
        bad = tmp_path / "bomb.png"
        write_bomb(bad)
    elif kind == "undecodable-name":
        bad = undecodable_path(tmp_path)
        write_jpeg(bad, seed=2)
    else:
        bad = tmp_path / "loop.jpg"
        os.symlink("loop.jpg", bad)
    samples = [Sample(str(good), 0, 0), Sample(str(bad), 1, 0)]

    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image.copy())

    strict = ImageSampleDataset(samples, to_tensor)
    with pytest.raises(BadImageError) as raised:
        strict[1]
    assert raised.value.kind == kind and raised.value.path == str(bad)
    assert str(raised.value).startswith(
        f"bad image {os.fsencode(bad).decode('utf-8', 'backslashreplace')} [{kind}]"
    )
    log_dir = tmp_path / "bad"
    skipping = ImageSampleDataset(
        samples, to_tensor, on_bad_image="skip", bad_image_dir=str(log_dir)
    )
    assert skipping[0] is not None and skipping[1] is None
    assert read_bad_images(str(log_dir)) == [str(bad)]  # the original name, bytes and all


def test_pils_warning_range_is_refused_too(tmp_path: Path, monkeypatch) -> None:
    # Between PIL's limit and twice it, PIL only warns; the project refuses the image itself.
    from PIL import Image

    path = tmp_path / "big.png"
    write_bomb(path, side=100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 - 1)
    with pytest.raises(BadImageError, match=r"100x100 pixels exceeds the limit of 9999 pixels"):
        load_rgb(path)


def test_list_paths_are_confined_to_their_root_unless_allowed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "x.jpg"
    write_jpeg(outside, seed=5)
    write_jpeg(outside.parent / "y.jpg", seed=6)
    list_file = tmp_path / "sketch.txt"
    lines = [f"Art/{c}/0000{i}.jpg {c}" for c in ("A", "B") for i in (1, 2)]
    list_file.write_text("\n".join([*lines, f"{outside} A", "../elsewhere/y.jpg B"]) + "\n")

    def sketch(**kwargs) -> ExtraDomain:
        return ExtraDomain("Sketch", image_list=str(list_file), image_root=str(tree), **kwargs)

    with pytest.raises(DataProblemsError) as raised:
        _ = build_officehome(tree, extra_domains=[sketch()]).class_names
    message = str(raised.value)
    assert f"ERROR [absolute-path] {list_file}:5: '{outside}' is absolute" in message
    assert (
        f"ERROR [escaping-path] {list_file}:6: '../elsewhere/y.jpg' leaves the image root"
        in message
    )
    assert "set `extra domain 'Sketch' allow_outside_root: true`" in message
    allowed = build_officehome(tree, extra_domains=[sketch(allow_outside_root=True)])
    sketch_files = allowed.domains[-1].files_by_class
    assert str(outside) in sketch_files["A"]
    assert str(tree / "../elsewhere/y.jpg") in sketch_files["B"]


def test_check_data_with_skip_tolerates_identical_junk(tree: Path) -> None:
    for image in (tree / "Art" / "A").glob("*.jpg"):
        image.write_bytes(b"")  # identical empty files land in train and val
    build_officehome(tree, check_data=True, on_bad_image="skip").prepare_data()  # no [leakage]
    with pytest.raises(DatasetLayoutError) as raised:
        build_officehome(tree, check_data=True).prepare_data()
    assert "[zero-byte]" in str(raised.value) and "[leakage]" not in str(raised.value)


def test_skipped_images_are_counted_per_split(tree: Path) -> None:
    bad = tree / "Art" / "A" / "00001.jpg"
    bad.write_bytes(b"")
    datamodule = build_officehome(tree, on_bad_image="skip", held_out_domains=["Art"], batch_size=8)
    datamodule.setup("validate")
    seen = sum(len(batch[1]) for batch in datamodule.val_dataloader() if batch is not None)
    assert seen == len(datamodule.split_samples["val"]) - 1
    assert datamodule.bad_images("val") == [str(bad)]
    assert datamodule.bad_images("test") == []
    assert datamodule.bad_images() == [str(bad)]


def test_validate_with_skip_logs_the_count_of_its_split(tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    from datamodules.demo import ensure_officehome_demo
    from experiments.officehome import main
    from tests.helpers.cli import tiny_demo_args

    cache = tmp_path / "cache"
    root = ensure_officehome_demo(
        str(cache), num_classes=4, images_per_class=10, image_size=48, seed=0
    )
    for image in sorted(Path(root).glob("*/*/*.*")):
        image.write_bytes(b"")  # every image is junk: each split skips all of its own
    cli = main(
        [
            "validate",
            *tiny_demo_args(tmp_path, epochs=1),
            "--data.init_args.images_per_class=10",
            f"--data.init_args.cache_dir={cache}",
            "--data.init_args.on_bad_image=skip",
        ]
    )
    metrics = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id).data.metrics
    val_count = len(cli.datamodule.split_samples["val"])
    assert metrics["data/bad_images/val"] == val_count > 0
    assert metrics["data/bad_images"] == val_count


def test_a_bad_image_in_a_worker_process_is_still_one_line(tree: Path) -> None:
    bad = tree / "Art" / "A" / "00001.jpg"
    bad.write_bytes(b"")
    datamodule = build_officehome(tree, held_out_domains=["Art"], batch_size=64)
    datamodule.num_workers = 1  # torch re-raises the worker's error from its traceback text
    datamodule.setup("validate")
    with pytest.raises(BadImageError) as raised:
        list(datamodule.val_dataloader())
    assert str(raised.value) == (
        f"bad image {bad} [zero-byte]: file is empty (0 bytes) (in DataLoader worker process 0)"
    )
    assert raised.value.kind == "zero-byte" and raised.value.path == str(bad)
