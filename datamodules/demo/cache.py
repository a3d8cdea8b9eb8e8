"""The cache of generated demo sets: each set is generated on first use into a folder named by
a hash of its generator, version and settings, atomically, so a crash never leaves a half tree
that is then used.

A finished folder holds a `.complete` marker with the settings it was made with. Generation
happens in a temporary sibling folder that is renamed into place once complete; several
processes (DDP ranks, parallel jobs) may race for the same folder and all get the same tree.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datamodules.data.cache import default_cache_dir

COMPLETE_MARKER = ".complete"


def _resolved_settings(generator: Callable[..., Path], settings: dict) -> dict:
    """The generator's full settings (defaults filled in) as JSON-ready values."""
    try:
        bound = inspect.signature(generator).bind(None, **settings)
    except TypeError as error:
        raise TypeError(f"{generator.__name__}: {error}") from None
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    resolved.pop("root")
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in resolved.items()}


def _record(
    kind: str, version: int, generator: Callable[..., Path], settings: dict
) -> tuple[dict, dict]:
    """(what the folder name hashes and the marker holds, the generator's full settings)."""
    resolved = _resolved_settings(generator, settings)
    return {"generator": kind, "version": version, **resolved}, resolved


def _folder_name(record: dict) -> str:
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return f"{record['generator']}_demo-{digest}"


def cache_folder_name(
    kind: str, version: int, generator: Callable[..., Path], settings: dict
) -> str:
    """`<kind>_demo-<hash>`, the hash over the kind, the version and all the generator's
    settings (defaults filled in); users' existing caches depend on it staying the same."""
    return _folder_name(_record(kind, version, generator, settings)[0])


def _discard_tree(path: Path) -> None:
    """Delete a folder that another process may be deleting or replacing at the same time."""
    trash = path.with_name(f".{path.name}.discard-{os.getpid()}-{time.monotonic_ns()}")
    try:
        # Renaming first makes the removal atomic for everyone else looking at `path`.
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def ensure_generated(
    kind: str,
    version: int,
    generator: Callable[..., Path],
    cache_dir: str | Path | None,
    settings: dict,
) -> Path:
    """The set that `generator(root, **settings)` writes, generated into the cache on first use.

    Args:
        kind: name of the set, the start of its folder name (`<kind>_demo-<hash>`).
        version: the generator's version; bumping it gives new folders, so stale sets are not
            reused.
        generator: writes the set into the folder it is given as first argument.
        cache_dir: cache folder; default `default_cache_dir()`.
        settings: keyword arguments of `generator`; unknown ones raise TypeError.

    Returns:
        The complete folder. Safe to call from several processes at once.
    """
    record, resolved = _record(kind, version, generator, settings)
    cache_root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    target = cache_root / _folder_name(record)
    if (target / COMPLETE_MARKER).is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        # A tree without its marker was not made by this function (or was damaged): rebuild it.
        _discard_tree(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_root))
    arguments = {k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items()}
    try:
        generator(staging, **arguments)
        (staging / COMPLETE_MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            # Another process (e.g. another DDP rank) finished first; its copy is identical.
            if not (target / COMPLETE_MARKER).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
