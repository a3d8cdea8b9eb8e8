"""Writing a DataModule's splits as LitData shards (`python -m experiments.make_shards`).

Every split of the DataModule (every domain; labels and domain indices) is written into LitData
optimized chunks, each image re-encoded with its short side at most `short_side` (never
enlarged); the folder's layout is described in `datamodules/data/shards.py`, which reads it.
Resumable: finished splits are kept and an interrupted one resumes from LitData's checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from litdata import StreamingDataset
from PIL import Image

from datamodules.data.samples import SampleArray
from datamodules.data.shards import (
    FORMAT_VERSION,
    META_FILE,
    WRITE_COMMAND,
    ShardsError,
    is_remote,
    split_settings,
)

ENCODINGS = ("jpeg", "png")


def resized(image: np.ndarray, short_side: int) -> Image.Image:
    """The image with its short side at most `short_side` (never enlarged)."""
    picture = Image.fromarray(image)
    width, height = picture.size
    scale = short_side / min(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return picture


def encode(image: np.ndarray, short_side: int, encoding: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    picture = resized(image, short_side)
    if encoding == "jpeg":
        picture.save(buffer, format="JPEG", quality=quality)
    else:
        picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class SampleEncoder:
    """The `fn` of `litdata.optimize`: sample index -> item, in LitData's worker processes.

    Holds the split's evaluation dataset (decoding only; no transform), which pickles small:
    path tables read from the file index travel as the index file's name.
    """

    def __init__(self, dataset, short_side: int, encoding: str, quality: int) -> None:
        self.dataset = dataset
        self.short_side, self.encoding, self.quality = short_side, encoding, quality

    def __call__(self, index: int) -> dict:
        sample = self.dataset.samples[index]
        try:
            image = self.dataset.decoded_image(index)
        except OSError as error:
            raise OSError(
                f"{error}; run python -m experiments.check_data on this configuration, remove "
                f"or replace the file, then run {WRITE_COMMAND} again (it resumes)"
            ) from error
        return {
            "image": encode(image, self.short_side, self.encoding, self.quality),
            "label": int(sample.label),
            "domain": int(sample.domain_index),
            "index": int(index),
        }


def _write_json(path: Path, content: dict) -> None:
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump(content, out, indent=2, sort_keys=True)
        out.write("\n")
    os.replace(staging, path)


def write_shards(
    datamodule,
    output: str | Path,
    short_side: int = 256,
    quality: int = 90,
    workers: int = 1,
    encoding: str = "jpeg",
    chunk_bytes: str = "64MB",
) -> dict:
    """Write every split of `datamodule` into LitData shards under `output`; returns the meta.

    Resumable: finished splits are kept and an interrupted one resumes from LitData's
    checkpoints (`use_checkpoint`). A finished folder is never overwritten: `FileExistsError`.
    """
    import litdata

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}; valid choices: {list(ENCODINGS)}")
    if short_side < 16:
        raise ValueError(f"short_side={short_side} is too small; use at least 16 pixels")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality} must be in [1, 100]")
    if is_remote(str(output)):
        raise ValueError(f"--output {output}: write into a local folder, then upload it")
    output = Path(output).expanduser()
    meta_path = output / META_FILE
    encoding_settings = {"short_side": short_side, "quality": quality, "encoding": encoding}
    meta = {
        "format": FORMAT_VERSION,
        "split_settings": split_settings(datamodule),
        "encoding": encoding_settings,
        "class_names": list(datamodule.class_names),
        "domain_names": list(datamodule.domain_names),
        "trained_domains": list(datamodule.trained_domains),
        "splits": {s: len(v) for s, v in datamodule.split_samples.items() if len(v)},
        "done": [],
        "complete": False,
    }
    if meta_path.is_file():
        existing = json.loads(meta_path.read_text())
        if existing.get("complete"):
            raise FileExistsError(
                f"{output} already holds finished shards; nothing was changed. Remove "
                "it first to write them again, or choose another --output"
            )
        same = {k: existing.get(k) == meta[k] for k in ("split_settings", "encoding", "splits")}
        if not all(same.values()):
            raise FileExistsError(
                f"{output} holds unfinished shards of other settings "
                f"({[k for k, ok in same.items() if not ok]} differ); remove it first or choose "
                "another --output"
            )
        meta["done"] = existing.get("done", [])
    elif output.exists() and any(output.iterdir()):
        raise FileExistsError(
            f"--output {output} exists and is not a shards folder; choose another"
        )
    output.mkdir(parents=True, exist_ok=True)
    _write_json(meta_path, meta)
    for split, count in meta["splits"].items():
        if split in meta["done"]:
            continue
        dataset = datamodule.make_dataset(split, augment=False)
        dataset.transform = None  # decoding only; keeps the pickled encoder small
        if hasattr(dataset, "min_decode_side"):
            dataset.min_decode_side = short_side
        encoder = SampleEncoder(dataset, short_side, encoding, quality)
        written = output / split
        if (written / "index.json").is_file():
            # LitData finished the split (its index is written last) before the run stopped.
            print(f"{split}: already written ({written})", flush=True)
        elif workers > 1:
            print(f"writing {split}: {count} images -> {written}", flush=True)
            litdata.optimize(
                fn=encoder,
                inputs=list(range(count)),
                output_dir=str(written),
                chunk_bytes=chunk_bytes,
                num_workers=workers,
                reorder_files=False,
                use_checkpoint=True,
                verbose=True,
            )
        else:
            write_split(encoder, count, written, chunk_bytes)
        labels, domains = _written_samples(dataset.samples, str(output / split), split)
        np.savez(output / f".{split}-samples.tmp.npz", labels=labels, domains=domains)
        os.replace(output / f".{split}-samples.tmp.npz", output / f"{split}-samples.npz")
        meta["done"].append(split)
        _write_json(meta_path, meta)
        checkpoints = output / split / ".checkpoints"
        if checkpoints.is_dir():
            shutil.rmtree(checkpoints)
    meta["complete"] = True
    _write_json(meta_path, meta)
    return meta


def write_split(
    encoder: SampleEncoder, count: int, written: Path, chunk_bytes: str = "64MB"
) -> None:
    """One process: LitData's chunk writer (`litdata.streaming.Cache`) in this process, the
    format `optimize` writes, without starting worker processes (which cost seconds each).
    An interrupted split restarts from its beginning."""
    from litdata.streaming import Cache
    from tqdm import tqdm

    if written.exists():
        shutil.rmtree(written)
    written.mkdir(parents=True)
    cache = Cache(str(written), chunk_bytes=chunk_bytes)
    for index in tqdm(range(count), desc=f"writing {written.name}", unit="image"):
        cache[index] = encoder(index)
    cache.done()
    cache.merge()


def _written_samples(
    samples: SampleArray, written: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and domains of a written split in item order.

    LitData's workers each write their own chunks, so item order need not be source order. The
    evaluation splits are read back (their items' `index` fields: every source sample exactly
    once, else the write is broken); for the training splits, streamed in shuffled order and
    never indexed, only the counts matter and the source order is kept.
    """
    labels, domains = samples.labels, samples.domain_indices
    items = StreamingDataset(written)
    if len(items) != len(labels):
        raise ShardsError(f"{written}: {len(items)} items written for {len(labels)} samples")
    if split in ("train", "train_target"):
        return labels, domains
    order = np.asarray([items[i]["index"] for i in range(len(items))], dtype=np.int64)
    if sorted(order.tolist()) != list(range(len(labels))):
        raise ShardsError(f"{written}: the items are not the split's samples, each once")
    return labels[order], domains[order]
