"""Where a DataModule's samples come from: a file tree (`FileTreeSource`) or LitData shards
(`ShardsSource`, with `data.shards`)."""

from __future__ import annotations

from datamodules.data.sources.base import SampleSource
from datamodules.data.sources.file_tree import FileTreeSource
from datamodules.data.sources.shards import ShardsSource


def source_for(datamodule) -> SampleSource:
    """The DataModule's source: its `shards` folder if it has one, else its file tree."""
    if datamodule.shards is None:
        return FileTreeSource(datamodule)
    return ShardsSource(datamodule, datamodule.shards)


__all__ = ["FileTreeSource", "SampleSource", "ShardsSource", "source_for"]
