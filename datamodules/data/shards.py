"""Prepared shards: a DataModule's splits written once as LitData optimized chunks, then streamed.

Reading a million small files costs a file open, a seek and a full-size JPEG decode per image;
a prepared copy holds each image re-encoded with its short side at most `short_side` (256 for
224 crops) in large chunk files that LitData's `StreamingDataset` reads sequentially, from a
local folder or from an object store (`s3://`, `gs://`, as LitData supports), sharded across DDP
ranks, nodes and DataLoader workers, with its position in the stream in the loader's state dict.

Layout of a prepared folder (`python -m experiments.prepare`):

    <output>/stylebench-prepared.json   what was prepared: dataset, classes, domains, split
                                        settings, counts, encoding; `complete` once all is written
    <output>/<split>/                   one LitData dataset per split (train, val, test,
                                        train_target): items {image: bytes, label, domain, index}
    <output>/<split>-samples.npz        labels and domain indices of the split, in item order
                                        (for the per-domain counts and the style-shifted set)

Training streams the shards (`StreamingImageDataset` in a `StreamingDataLoader`); evaluation
reads them by index (`PreparedImageDataset`), so the evaluation samplers (unpadded under DDP:
each validation image once) and the style-shifted set work as on the file tree.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from litdata import StreamingDataset
from PIL import Image

from datamodules.data.index import SampleArray
from datamodules.data.style_shift import StyleShiftedDataset

META_FILE = "stylebench-prepared.json"
FORMAT_VERSION = 1
ENCODINGS = ("jpeg", "png")


class PreparedDataError(ValueError):
    """A prepared folder is missing, unfinished or does not match the configuration."""


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser()


def fetch(uri: str, name: str) -> Path:
    """A small file of a prepared folder as a local path (downloaded from an object store)."""
    if not is_remote(uri):
        return _local(uri) / name
    # LitData has no public call for fetching one file; its provider classes are what its
    # own downloader uses (tests/datamodules/data/test_shards.py checks they still exist).
    from litdata.streaming.fs_provider import _get_fs_provider

    target = Path(tempfile.mkdtemp(prefix="stylebench-prepared-")) / name
    remote = uri.rstrip("/") + "/" + name
    _get_fs_provider(remote).download_file(remote, str(target))
    return target


def read_meta(uri: str) -> dict:
    """The prepared folder's description; `PreparedDataError` unless it is complete."""
    try:
        meta = json.loads(fetch(uri, META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise PreparedDataError(
            f"data.prepared={uri!r} is not a prepared folder ({META_FILE}: {error}); write it "
            "with python -m experiments.prepare --config <the same yaml> --output <folder>"
        ) from None
    if not meta.get("complete"):
        raise PreparedDataError(
            f"data.prepared={uri!r} is unfinished (preparing was interrupted); run the same "
            "python -m experiments.prepare command again to resume it"
        )
    return meta


def split_settings(datamodule) -> dict:
    """What decides a DataModule's splits: a prepared folder is only read by a configuration
    that would make the same splits."""
    return {
        "dataset": datamodule.dataset_name,
        "held_out_domains": list(datamodule.held_out_domains),
        "target_domains": list(datamodule.target_domains),
        "val_fraction": datamodule.val_fraction,
        "test_fraction": datamodule.test_fraction,
        "split_seed": datamodule.split_seed,
    }


def check_matches(meta: dict, datamodule, uri: str) -> None:
    """`PreparedDataError` naming each setting where the configuration and the folder differ."""
    own = split_settings(datamodule)
    differing = {k: (v, meta["split_settings"].get(k)) for k, v in own.items()}
    differing = {k: v for k, v in differing.items() if v[0] != v[1]}
    if differing:
        lines = "; ".join(f"{k}: config {a!r}, prepared {b!r}" for k, (a, b) in differing.items())
        raise PreparedDataError(
            f"data.prepared={uri!r} was prepared with other split settings ({lines}); prepare "
            "this configuration into another folder, or use the settings it was prepared with"
        )


# ----- writing ------------------------------------------------------------------------------------
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
                "or replace the file, then run python -m experiments.prepare again (it resumes)"
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


def prepare(
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
        raise ValueError(f"--output {output}: prepare into a local folder, then upload it")
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
                f"{output} already holds finished prepared shards; nothing was changed. Remove "
                "it first to prepare again, or choose another --output"
            )
        same = {k: existing.get(k) == meta[k] for k in ("split_settings", "encoding", "splits")}
        if not all(same.values()):
            raise FileExistsError(
                f"{output} holds an unfinished preparation of other settings "
                f"({[k for k, ok in same.items() if not ok]} differ); remove it first or choose "
                "another --output"
            )
        meta["done"] = existing.get("done", [])
    elif output.exists() and any(output.iterdir()):
        raise FileExistsError(
            f"--output {output} exists and is not a prepared folder; choose another"
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
            print(f"preparing {split}: {count} images -> {written}", flush=True)
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
    for index in tqdm(range(count), desc=f"preparing {written.name}", unit="image"):
        cache[index] = encoder(index)
    cache.done()
    cache.merge()


def _written_samples(samples, written: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and domains of a written split in item order.

    LitData's workers each write their own chunks, so item order need not be source order. The
    evaluation splits are read back (their items' `index` fields: every source sample exactly
    once, else the write is broken); for the training splits, streamed in shuffled order and
    never indexed, only the counts matter and the source order is kept.
    """
    if isinstance(samples, SampleArray):
        labels, domains = samples.labels, samples.domain_indices
    else:
        labels = np.asarray([s.label for s in samples], np.int32)
        domains = np.asarray([s.domain_index for s in samples], np.int16)
    items = StreamingDataset(written)
    if len(items) != len(labels):
        raise PreparedDataError(f"{written}: {len(items)} items written for {len(labels)} samples")
    if split in ("train", "train_target"):
        return labels, domains
    order = np.asarray([items[i]["index"] for i in range(len(items))], dtype=np.int64)
    if sorted(order.tolist()) != list(range(len(labels))):
        raise PreparedDataError(f"{written}: the items are not the split's samples, each once")
    return labels[order], domains[order]


# ----- reading ------------------------------------------------------------------------------------
def decode(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Encoded bytes -> uint8 HxWx3, at reduced JPEG scale down to `min_side` as `load_rgb`
    does (the images were written as 8-bit RGB, orientation applied, so no more is needed)."""
    with Image.open(io.BytesIO(data)) as image:
        if min_side is not None and image.format == "JPEG":
            width, height = image.size
            scale = min_side / min(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        image.load()
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


class ItemNames:
    """The names `<split folder>#<item>` of a prepared split's items, made when asked for: a
    path table without stored paths (the items have no files)."""

    nbytes = 0

    def __init__(self, folder: str, count: int) -> None:
        self.folder, self.count = folder, count

    def __len__(self) -> int:
        return self.count

    def path(self, row: int) -> str:
        return f"{self.folder}#{int(row)}"


def split_samples(uri: str, split: str) -> SampleArray:
    """A prepared split's labels and domains as samples named `<uri>/<split>#<item>`."""
    with np.load(fetch(uri, f"{split}-samples.npz")) as arrays:
        labels, domains = arrays["labels"], arrays["domains"]
    table = ItemNames(f"{uri.rstrip('/')}/{split}", len(labels))
    return SampleArray(
        [table], np.zeros(len(labels), np.uint8), np.arange(len(labels)), labels, domains
    )


class StreamingImageDataset(StreamingDataset):
    """A prepared split streamed by LitData: items -> (uint8 CxHxW tensor, label, domain)."""

    def __init__(
        self,
        input_dir: str,
        image_transform: Callable,
        min_decode_side: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(input_dir, **kwargs)
        self.image_transform = image_transform
        self.min_decode_side = min_decode_side

    def __getitem__(self, index):
        item = super().__getitem__(index)
        image = decode(item["image"], self.min_decode_side)
        return self.image_transform(image), item["label"], item["domain"]


class PreparedImageDataset(torch.utils.data.Dataset):
    """A prepared split read by index (evaluation): the items of `ImageSampleDataset`.

    Map-style, so the evaluation samplers (unpadded under DDP) and the style-shifted wrapper
    work on it as on the file tree; evaluation reads the items in order, so chunks are still
    read sequentially.
    """

    on_bad_image = "error"

    def __init__(
        self,
        uri: str,
        split: str,
        transform: Callable,
        min_decode_side: int | None = None,
        samples: SampleArray | None = None,
    ) -> None:
        self.uri, self.split = uri, split
        self.transform = transform
        self.min_decode_side = min_decode_side
        self.samples = samples if samples is not None else split_samples(uri, split)
        self._stream: StreamingDataset | None = None

    def _items(self) -> StreamingDataset:
        # Opened lazily, in the process that reads (each DataLoader worker has its own).
        if self._stream is None:
            self._stream = StreamingDataset(f"{self.uri.rstrip('/')}/{self.split}")
        return self._stream

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def __len__(self) -> int:
        return len(self.samples)

    def decoded_image(self, index: int) -> np.ndarray:
        return decode(self._items()[int(index)]["image"], self.min_decode_side)

    def decoded_reference(self, name: str) -> np.ndarray:
        """A reference image of the style-shifted set, named `<uri>/<split>#<item>`."""
        return self.decoded_image(int(name.rsplit("#", 1)[1]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        item = self._items()[int(index)]
        image = decode(item["image"], self.min_decode_side)
        return self.transform(image), item["label"], item["domain"]


class PreparedStyleShiftedDataset(StyleShiftedDataset):
    """The style-shifted set over a prepared split: references are items of the same split."""

    def shifted_image(self, index: int) -> np.ndarray:
        content = self.plain.decoded_image(index)
        reference = self.plain.decoded_reference(self.reference_paths[index])
        return self.shift(content, reference)
