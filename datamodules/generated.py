"""What the demo DataModules share: their data is generated into the cache on first use.

Each demo DataModule keeps its own `__init__` (LightningCLI reads its arguments and their
docstrings), records its generator's settings with `use_generated_data`, and names its
generator (`demo_generator`, e.g. `ensure_officehome_demo`); `generate_root` then makes (or
finds, in the cache) the data when `root` is null.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class GeneratedData:
    """Mixin of the demo DataModules (list it before the dataset's DataModule)."""

    #: `(cache_dir, **demo_settings)` -> the generated set's folder, e.g. `ensure_dtd_demo`.
    demo_generator: Callable[..., Path]

    def use_generated_data(self, cache_dir: str | None, **settings) -> None:
        """Record where the data is cached (None: `$STYLEBENCH_DATA_DIR` or
        `~/.cache/stylebench`) and the generator's settings; nothing is generated yet."""
        self.cache_dir = cache_dir
        self.demo_settings = settings

    def generate_root(self) -> Path:
        return self.demo_generator(self.cache_dir, **self.demo_settings)
