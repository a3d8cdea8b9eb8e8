"""LitData shards: exactly the source's images, labels and domains; read back by the
DataModule with the same splits, metrics and resumable stream position."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from litdata import StreamingDataset

from datamodules.data.image_io import load_rgb
from datamodules.data.shard_writer import resized, write_shards
from datamodules.data.shards import META_FILE, ShardImageDataset, ShardsError
from datamodules.officehome import OfficeHomeDemoDataModule

REPO = Path(__file__).resolve().parents[3]
SHORT_SIDE = 20  # below the generated images' 40x30: every image is resized


def demo(cache: Path, **kwargs) -> OfficeHomeDemoDataModule:
    settings = {
        "demo_classes": 2,
        "images_per_class": 5,
        "demo_image_size": 30,
        "cache_dir": str(cache),
        "image_size": 16,
        "resize_size": 18,
        "batch_size": 4,
        "num_workers": 0,
        "held_out_domains": ["Product"],
        **kwargs,
    }
    return OfficeHomeDemoDataModule(**settings)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """(demo cache, shards folder): the demo written losslessly (PNG) once for the module."""
    folder = tmp_path_factory.mktemp("shards")
    cache = folder / "cache"
    write_shards(demo(cache), folder / "shards", short_side=SHORT_SIDE, encoding="png", workers=1)
    return cache, folder / "shards"


def test_shards_hold_exactly_the_source_images_labels_and_domains(written) -> None:
    cache, output = written
    source = demo(cache)
    meta = json.loads((output / META_FILE).read_text())
    assert meta["complete"] and meta["class_names"] == source.class_names
    assert meta["splits"] == {s: len(v) for s, v in source.split_samples.items() if len(v)}
    for split, samples in source.split_samples.items():
        if not len(samples):
            continue
        items = StreamingDataset(str(output / split))
        assert len(items) == len(samples)
        seen = []
        for position in range(len(items)):
            item = items[position]
            sample = samples[item["index"]]
            # Compared after decoding: the source decoded at full size and resized as the writer
            # does, against the stored PNG (lossless), pixel for pixel.
            expected = np.asarray(resized(load_rgb(sample.path), SHORT_SIDE))
            stored = np.asarray(load_rgb_bytes(item["image"]))
            assert min(stored.shape[:2]) == SHORT_SIDE
            np.testing.assert_array_equal(stored, expected)
            assert (item["label"], item["domain"]) == (sample.label, sample.domain_index)
            seen.append(item["index"])
        assert sorted(seen) == list(range(len(samples)))  # every sample, each once


def load_rgb_bytes(data: bytes) -> np.ndarray:
    from datamodules.data.shards import decode

    return decode(data)


def test_datamodule_on_shards_has_the_same_splits_classes_and_domains(written) -> None:
    cache, output = written
    tree, shards = demo(cache), demo(cache, shards=str(output))
    assert shards.class_names == tree.class_names
    assert shards.domain_names == tree.domain_names
    assert shards.trained_domains == tree.trained_domains
    assert shards.split_counts() == tree.split_counts()
    shards.setup("fit")
    val = shards.datasets["val"]
    assert isinstance(val, ShardImageDataset)
    images, label, domain = val[0]
    assert images.shape == (3, 16, 16)
    assert (label, domain) == (val.samples[0].label, val.samples[0].domain_index)
    batch = next(iter(shards.train_dataloader()))
    assert batch[0].shape == (4, 3, 16, 16)
    assert set(batch[2].tolist()) <= {0, 1, 3}  # Product (2) is held out: never trained on


def test_other_split_settings_are_refused(written) -> None:
    cache, output = written
    with pytest.raises(ShardsError, match="held_out_domains"):
        _ = demo(cache, shards=str(output), held_out_domains=["Art"]).class_names
    with pytest.raises(ShardsError, match="not a shards folder"):
        _ = demo(cache, shards=str(output / "nowhere")).class_names


def test_a_finished_output_is_never_overwritten_and_an_unfinished_one_resumes(
    written, tmp_path
) -> None:
    cache, output = written
    before = {p: p.stat().st_mtime_ns for p in output.rglob("*")}
    with pytest.raises(FileExistsError, match="already holds finished"):
        write_shards(demo(cache), output, short_side=SHORT_SIDE, encoding="png")
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*")} == before
    # An interrupted writer: `train` finished, `val` and `test` not yet written.
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    meta = json.loads((copy / META_FILE).read_text())
    meta.update(done=["train"], complete=False)
    (copy / META_FILE).write_text(json.dumps(meta))
    shutil.rmtree(copy / "val")
    train_chunks = {p: p.stat().st_mtime_ns for p in (copy / "train").iterdir()}
    with pytest.raises(ShardsError, match="unfinished"):
        _ = demo(cache, shards=str(copy)).class_names
    write_shards(demo(cache), copy, short_side=SHORT_SIDE, encoding="png", workers=1)
    assert {p: p.stat().st_mtime_ns for p in (copy / "train").iterdir()} == train_chunks
    assert len(StreamingDataset(str(copy / "val"))) == meta["splits"]["val"]
    assert json.loads((copy / META_FILE).read_text())["complete"]


def test_a_resumed_stream_continues_the_epoch(written) -> None:
    cache, output = written
    first = demo(cache, shards=str(output))
    first.setup("fit")
    loader = first.train_dataloader()
    seen, batches = [], iter(loader)
    for _ in range(2):
        seen.append(next(batches))
    state = first.state_dict()
    # A new process restoring the checkpoint: the DataModule's state, then its loaders.
    resumed = demo(cache, shards=str(output))
    resumed.load_state_dict(state)
    resumed.setup("fit")
    rest = list(resumed.train_dataloader())
    reference = demo(cache, shards=str(output))
    reference.setup("fit")
    whole = list(reference.train_dataloader())
    assert len(seen) + len(rest) == len(whole) > 2
    # The same seeded order: the resumed run gives the rest of the epoch, nothing twice.
    for ours, theirs in zip(seen + rest, whole, strict=True):
        assert ours[1].tolist() == theirs[1].tolist() and ours[2].tolist() == theirs[2].tolist()
    # A checkpoint written before the rename keeps the positions under "prepared_streams".
    old = demo(cache, shards=str(output))
    old.load_state_dict({"prepared_streams": state["shard_streams"]})
    old.setup("fit")
    old_rest = list(old.train_dataloader())
    assert [batch[1].tolist() for batch in old_rest] == [batch[1].tolist() for batch in rest]


def test_litdata_private_file_fetch_still_exists() -> None:
    # shards.fetch uses it for the small files of a shards folder in an object store.
    from litdata.streaming.fs_provider import FsProvider, _get_fs_provider

    assert callable(_get_fs_provider) and hasattr(FsProvider, "download_file")


# Slow tier: two CLI fits (the tree, the shards: about 20 s); the DataModule on shards keeps
# its fast tests above.
@pytest.mark.slow
def test_fit_on_shards_validates_the_same_images_per_domain(written, tmp_path, monkeypatch) -> None:
    """One epoch of the classifier on the file tree and on the shards: the same number of
    validation images per domain, plain and style-shifted (the demo config evaluates both)."""
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (the artifacts) goes there
    from pytorch_lightning import Callback

    from experiments.officehome import main

    class CountDomains(Callback):
        def __init__(self) -> None:
            self.counts: Counter = Counter()

        def on_validation_batch_end(
            self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0
        ) -> None:
            # Keyed by loader too: the demo also evaluates the style-shifted set (loader 1).
            self.counts.update((dataloader_idx, d) for d in batch[2].tolist())

    cache, output = written
    counts = {}
    for name, extra in (("tree", []), ("shards", ["--data.init_args.shards", str(output)])):
        args = [
            "fit",
            "--config", str(REPO / "configs/officehome/demo.yaml"),
            "--config", str(REPO / "tests/configs/officehome_tiny.yaml"),
            "--data.init_args.demo_classes", "2",
            "--data.init_args.images_per_class", "5",
            "--data.init_args.demo_image_size", "30",
            "--data.init_args.cache_dir", str(cache),
            "--data.init_args.image_size", "16",
            "--data.init_args.resize_size", "18",
            "--data.init_args.batch_size", "4",
            "--data.init_args.held_out_domains", "[Product]",
            "--data.init_args.test_fraction", "0.0",
            "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2",
            "--trainer.default_root_dir", str(tmp_path / name),
            "--trainer.logger.init_args.tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            *extra,
        ]  # fmt: skip
        cli = main(args)
        counter = CountDomains()
        cli.trainer.callbacks.append(counter)
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
        counts[name] = counter.counts
        cli.trainer.logger.finalize("success")
    assert counts["shards"] == counts["tree"]
    val = demo(cache).split_samples["val"]
    for loader in (0, 1):
        assert {d: n for (i, d), n in counts["tree"].items() if i == loader} == Counter(
            s.domain_index for s in val
        )
