"""Bad inputs written into a test tree: decompression bombs, undecodable names, truncated
files, a class mismatch, an empty domain, a symlink loop."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from tests.helpers.trees import write_jpeg


def write_bomb(path: Path, side: int = 30000) -> None:
    """A valid PNG header claiming `side` x `side` pixels (a few bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def undecodable_path(folder: Path) -> Path:
    """A file name that is not UTF-8 (bytes ff fe), as Python sees it (PEP 383)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/\xff\xfe.jpg"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_class_mismatch(root: Path) -> None:
    write_jpeg(root / "Clipart" / "C" / "00001.jpg", seed=99)


def make_empty_domain(root: Path) -> None:
    for image in (root / "Product").glob("*/*.jpg"):
        image.unlink()


def make_symlink_loop(root: Path) -> None:
    os.symlink("loop.jpg", root / "Clipart" / "B" / "loop.jpg")


def make_undecodable_name(root: Path) -> None:
    write_jpeg(undecodable_path(root / "Clipart" / "A"), seed=98)
