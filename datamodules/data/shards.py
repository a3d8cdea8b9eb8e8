"""LitData shards: a DataModule's splits written once as LitData optimized chunks, then streamed.

Reading a million small files costs a file open, a seek and a full-size JPEG decode per image;
shards hold each image re-encoded with its short side at most `short_side` (256 for 224 crops)
in large chunk files that LitData's `StreamingDataset` reads sequentially, from a local folder
or from an object store (`s3://`, `gs://`, as LitData supports), sharded across DDP ranks, nodes
and DataLoader workers, with its position in the stream in the loader's state dict.

Layout of a shards folder (written by `python -m experiments.make_shards`, see
`datamodules/data/shard_writer.py`):

    <output>/stylebench-prepared.json   what was written: dataset, classes, domains, split
                                        settings, counts, encoding; `complete` once all is written
    <output>/<split>/                   one LitData dataset per split (train, val, test,
                                        train_target): items {image: bytes, label, domain, index}
    <output>/<split>-samples.npz        labels and domain indices of the split, in item order
                                        (for the per-domain counts and the style-shifted set)

This module reads them: training streams the shards (`StreamingImageDataset` in a
`StreamingDataLoader`); evaluation reads them by index (`ShardImageDataset`), so the evaluation
samplers (unpadded under DDP: each validation image once) and the style-shifted set work as on
the file tree.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from litdata import StreamingDataset
from PIL import Image

from datamodules.data.samples import SampleArray
from datamodules.data.style_shift import StyleShiftedDataset

#: The description file of a shards folder. Its name predates the word "shards" and is kept, so
#: that folders written before still read.
META_FILE = "stylebench-prepared.json"
FORMAT_VERSION = 1
#: The command that writes shards, for the error messages.
WRITE_COMMAND = "python -m experiments.make_shards"


class ShardsError(ValueError):
    """A shards folder is missing, unfinished or does not match the configuration."""


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser()


def fetch(uri: str, name: str) -> Path:
    """A small file of a shards folder as a local path (downloaded from an object store)."""
    if not is_remote(uri):
        return _local(uri) / name
    # LitData has no public call for fetching one file; its provider classes are what its
    # own downloader uses (tests/datamodules/data/test_shards.py checks they still exist).
    from litdata.streaming.fs_provider import _get_fs_provider

    target = Path(tempfile.mkdtemp(prefix="stylebench-shards-")) / name
    remote = uri.rstrip("/") + "/" + name
    _get_fs_provider(remote).download_file(remote, str(target))
    return target


def read_meta(uri: str) -> dict:
    """The shards folder's description; `ShardsError` unless it is complete."""
    try:
        meta = json.loads(fetch(uri, META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise ShardsError(
            f"data.shards={uri!r} is not a shards folder ({META_FILE}: {error}); write it "
            f"with {WRITE_COMMAND} --config <the same yaml> --output <folder>"
        ) from None
    if not meta.get("complete"):
        raise ShardsError(
            f"data.shards={uri!r} is unfinished (writing was interrupted); run the same "
            f"{WRITE_COMMAND} command again to resume it"
        )
    return meta


def split_settings(datamodule) -> dict:
    """What decides a DataModule's splits: a shards folder is only read by a configuration
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
    """`ShardsError` naming each setting where the configuration and the folder differ."""
    own = split_settings(datamodule)
    differing = {k: (v, meta["split_settings"].get(k)) for k, v in own.items()}
    differing = {k: v for k, v in differing.items() if v[0] != v[1]}
    if differing:
        lines = "; ".join(f"{k}: config {a!r}, shards {b!r}" for k, (a, b) in differing.items())
        raise ShardsError(
            f"data.shards={uri!r} was written with other split settings ({lines}); write "
            "this configuration's shards into another folder, or use the settings it was "
            "written with"
        )


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
    """The names `<split folder>#<item>` of a split's items, made when asked for: a
    path table without stored paths (the items have no files)."""

    nbytes = 0

    def __init__(self, folder: str, count: int) -> None:
        self.folder, self.count = folder, count

    def __len__(self) -> int:
        return self.count

    def path(self, row: int) -> str:
        return f"{self.folder}#{int(row)}"


def split_samples(uri: str, split: str) -> SampleArray:
    """A split's labels and domains, as samples named `<uri>/<split>#<item>`."""
    with np.load(fetch(uri, f"{split}-samples.npz")) as arrays:
        labels, domains = arrays["labels"], arrays["domains"]
    table = ItemNames(f"{uri.rstrip('/')}/{split}", len(labels))
    return SampleArray(
        [table], np.zeros(len(labels), np.uint8), np.arange(len(labels)), labels, domains
    )


class StreamingImageDataset(StreamingDataset):
    """A split of a shards folder streamed by LitData: items -> (uint8 CxHxW tensor, label,
    domain)."""

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


class ShardImageDataset(torch.utils.data.Dataset):
    """A split of a shards folder read by index (evaluation): the items of `ImageSampleDataset`.

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


class ShardStyleShiftedDataset(StyleShiftedDataset):
    """The style-shifted set over a split of a shards folder: references are items of the same
    split."""

    def shifted_image(self, index: int) -> np.ndarray:
        content = self.plain.decoded_image(index)
        reference = self.plain.decoded_reference(self.reference_paths[index])
        return self.shift(content, reference)
