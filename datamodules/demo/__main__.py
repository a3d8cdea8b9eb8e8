"""Command line: generate a demo set into a folder, optionally with a sample grid PNG.

python -m datamodules.demo officehome --root data/officehome_demo --grid grid.png
python -m datamodules.demo cue_conflict --root data/cue_conflict_demo --grid cc.png
python -m datamodules.demo dtd --root data/dtd_demo --grid dtd_grid.png
python -m datamodules.demo cifar10 --root data/cifar10_demo --images 100
python -m datamodules.demo pacs --root data/pacs_demo --grid pacs_grid.png (also vlcs,
terra_incognita, domainnet, mnist: see datamodules/demo/domainbed_cli.py)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from datamodules.demo.cifar import generate_cifar10_demo, generate_cifar100_demo
from datamodules.demo.cue_conflict import generate_cue_conflict_demo, save_cue_conflict_grid
from datamodules.demo.domainbed_cli import add_domainbed_parsers, run_domainbed_demo
from datamodules.demo.dtd import generate_dtd_demo, save_dtd_grid
from datamodules.demo.officehome import generate_officehome_demo, save_officehome_grid


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.demo", description=__doc__.split("\n\n")[0]
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    officehome = kinds.add_parser(
        "officehome", help="Office-Home-like shapes in four styles: <root>/<Domain>/<Class>/"
    )
    cue_conflict = kinds.add_parser(
        "cue_conflict", help="cue-conflict images: <root>/<shape>/<shape><i>-<texture><j>.png"
    )
    dtd = kinds.add_parser("dtd", help="DTD-layout textures: <root>/images/, <root>/labels/")
    for sub, classes, images, per, image_size in (
        (officehome, 6, 40, "per class and domain", 96),
        (cue_conflict, 6, 10, "per (shape, texture) pair", 96),
        (dtd, 8, 30, "per class", 64),
    ):
        sub.add_argument("--root", required=True, help="output folder")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--num-classes", type=int, default=classes)
        sub.add_argument("--image-size", type=int, default=image_size)
        sub.add_argument("--images", type=int, default=images, help=f"images {per}")
        sub.add_argument("--grid", default=None, help="also save a sample grid PNG here")
    officehome.add_argument("--grid-samples", type=int, default=1, help="images per grid cell")
    # CIFAR archives: 32 px pickled batches with a fixed class count, so no size or grid options.
    for name, images, test_images in (("cifar10", 100, 20), ("cifar100", 5, 2)):
        cifar = kinds.add_parser(name, help=f"{name} python archive (pickled batches) in <root>")
        cifar.add_argument("--root", required=True, help="output folder")
        cifar.add_argument("--seed", type=int, default=0)
        cifar.add_argument("--images", type=int, default=images, help="training images per class")
        cifar.add_argument("--test-images", type=int, default=test_images, help="per class")
    cue_conflict.add_argument("--style", default="Neutral", help="rendering style")
    add_domainbed_parsers(kinds)  # pacs, vlcs, terra_incognita, domainnet, mnist
    return parser


def main(args: Sequence[str] | None = None) -> None:
    """Parse `args` (default: the command line), generate the set, save the grid if asked."""
    options = _parser().parse_args(args)
    if run_domainbed_demo(options):
        return
    if options.kind in ("cifar10", "cifar100"):
        generate = generate_cifar10_demo if options.kind == "cifar10" else generate_cifar100_demo
        root = generate(
            options.root,
            images_per_class=options.images,
            test_images_per_class=options.test_images,
            seed=options.seed,
        )
        print(f"wrote the {options.kind} demo archive to {root}")
        return
    common = {
        "num_classes": options.num_classes,
        "image_size": options.image_size,
        "seed": options.seed,
    }
    started = time.perf_counter()
    if options.kind == "officehome":
        root = generate_officehome_demo(options.root, images_per_class=options.images, **common)
    elif options.kind == "cue_conflict":
        root = generate_cue_conflict_demo(
            options.root, images_per_pair=options.images, style=options.style, **common
        )
    else:
        root = generate_dtd_demo(options.root, images_per_class=options.images, **common)
    count = sum(1 for p in Path(root).rglob("*") if p.suffix in (".jpg", ".png"))
    print(f"wrote {count} images to {root} in {time.perf_counter() - started:.1f} s")
    if options.grid:
        if options.kind == "officehome":
            grid = save_officehome_grid(root, options.grid, options.grid_samples)
        elif options.kind == "cue_conflict":
            grid = save_cue_conflict_grid(root, options.grid)
        else:
            grid = save_dtd_grid(root, options.grid)
        print(f"grid: {grid}")


if __name__ == "__main__":
    main()
