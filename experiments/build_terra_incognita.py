"""Build DomainBed's TerraIncognita layout from the Caltech Camera Traps archive.

    python -m experiments.build_terra_incognita --source /data/cct --dest /data/terra_incognita

`--source` holds `eccv_18_all_images_sm/` and `eccv_18_annotation_files/` (the two archives of
https://lila.science/datasets/caltech-camera-traps, extracted); `--dest` gets
`location_<n>/<class>/<file>`, hard-linked (or copied with `--copy`), exactly as DomainBed's
download script selects them (`datamodules/terra_incognita.py`). Nothing is deleted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from datamodules.terra_incognita import build_terra_incognita


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.build_terra_incognita", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--source", required=True, help="folder holding the extracted archive")
    parser.add_argument("--dest", required=True, help="output folder (location_<n>/ go here)")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of linking")
    options = parser.parse_args(argv)
    counts = build_terra_incognita(options.source, options.dest, copy=options.copy)
    for location, by_class in counts.items():
        print(f"{location}: {sum(by_class.values())} images " + str(dict(sorted(by_class.items()))))
    print(f"total: {sum(sum(c.values()) for c in counts.values())} images in {options.dest}")
    return 0


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
