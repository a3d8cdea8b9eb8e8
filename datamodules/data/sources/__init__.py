"""Where a DataModule's samples come from: a file tree (`FileTreeSource`) or LitData shards
(`ShardsSource`, with `data.shards`).

`ShardsSource` is imported on first use: it imports LitData, which a run without `data.shards`
never needs (about 0.4 s and its dependencies in every `fit`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamodules.data.sources.base import SampleSource
from datamodules.data.sources.file_tree import FileTreeSource

if TYPE_CHECKING:
    from datamodules.data.sources.shards import ShardsSource


def source_for(datamodule) -> SampleSource:
    """The DataModule's source: its `shards` folder if it has one, else its file tree."""
    if datamodule.shards is None:
        return FileTreeSource(datamodule)
    from datamodules.data.sources.shards import ShardsSource

    return ShardsSource(datamodule, datamodule.shards)


def __getattr__(name: str):
    # `from datamodules.data.sources import ShardsSource` keeps working, importing LitData then.
    if name == "ShardsSource":
        from datamodules.data.sources.shards import ShardsSource

        return ShardsSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FileTreeSource", "SampleSource", "ShardsSource", "source_for"]
