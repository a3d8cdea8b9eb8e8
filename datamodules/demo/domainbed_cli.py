"""The DomainBed copies' part of `python -m datamodules.demo`: one sub-command each.

python -m datamodules.demo pacs --root data/pacs_demo [--layout domainbed] [--grid pacs.png]
python -m datamodules.demo vlcs --root data/vlcs_demo
python -m datamodules.demo terra_incognita --root data/terra_demo [--layout cct]
python -m datamodules.demo domainnet --root data/domainnet_demo [--layout domainbed]
python -m datamodules.demo mnist --root data/mnist_demo [--layout domainbed] [--gzipped]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from datamodules.demo.domainbed import (
    generate_domainnet_demo,
    generate_pacs_demo,
    generate_terra_incognita_demo,
    generate_vlcs_demo,
)
from datamodules.demo.domainbed_render import save_image_folder_grid
from datamodules.demo.mnist import MNIST_LAYOUTS, generate_mnist_demo

#: Sub-command -> (generator, help, layouts, image folder under root by layout).
IMAGE_FOLDER_KINDS = {
    "pacs": (
        generate_pacs_demo,
        "PACS copy: kfold/<domain>/<class>/ + <domain>_<split>_kfold.txt",
        ("distributed", "domainbed"),
        {"distributed": "kfold", "domainbed": "PACS"},
    ),
    "vlcs": (generate_vlcs_demo, "VLCS copy: VLCS/<domain>/<class>/", (), {None: "VLCS"}),
    "terra_incognita": (
        generate_terra_incognita_demo,
        "TerraIncognita copy: terra_incognita/location_<n>/<class>/ (or the CCT archive)",
        ("domainbed", "cct"),
        {"domainbed": "terra_incognita", "cct": None},
    ),
    "domainnet": (
        generate_domainnet_demo,
        "DomainNet copy: <domain>/<class>/ + <domain>_{train,test}.txt + duplicates list",
        ("distributed", "domainbed"),
        {"distributed": ".", "domainbed": "domain_net"},
    ),
}


def add_domainbed_parsers(kinds: argparse._SubParsersAction) -> None:
    """Add the DomainBed copies' sub-commands to `python -m datamodules.demo`."""
    for kind, (_, help_text, layouts, _) in IMAGE_FOLDER_KINDS.items():
        sub = kinds.add_parser(kind, help=help_text)
        sub.add_argument("--root", required=True, help="output folder")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--image-size", type=int, default=64)
        sub.add_argument("--images", type=int, default=12, help="images per class and domain")
        if layouts:
            sub.add_argument("--layout", choices=layouts, default=layouts[0])
        sub.add_argument("--grid", default=None, help="also save a sample grid PNG here")
    mnist = kinds.add_parser("mnist", help="MNIST IDX files in <root>/MNIST/raw/")
    mnist.add_argument("--root", required=True, help="output folder")
    mnist.add_argument("--seed", type=int, default=0)
    mnist.add_argument("--train-images", type=int, default=1200)
    mnist.add_argument("--test-images", type=int, default=300)
    mnist.add_argument("--layout", choices=tuple(MNIST_LAYOUTS), default="torchvision")
    mnist.add_argument("--gzipped", action="store_true", help="write .gz files")


def run_domainbed_demo(options: argparse.Namespace) -> bool:
    """Generate the copy `options.kind` names, if it is one of these; whether it was."""
    started = time.perf_counter()
    if options.kind == "mnist":
        root = generate_mnist_demo(
            options.root,
            train_images=options.train_images,
            test_images=options.test_images,
            seed=options.seed,
            layout=options.layout,
            gzipped=options.gzipped,
        )
        print(f"wrote the MNIST files to {root} in {time.perf_counter() - started:.1f} s")
        return True
    if options.kind not in IMAGE_FOLDER_KINDS:
        return False
    generate, _, layouts, folders = IMAGE_FOLDER_KINDS[options.kind]
    layout = {"layout": options.layout} if layouts else {}
    root = generate(
        options.root,
        images_per_class=options.images,
        image_size=options.image_size,
        seed=options.seed,
        **layout,
    )
    count = sum(1 for p in Path(root).rglob("*") if p.suffix in (".jpg", ".png"))
    print(f"wrote {count} images to {root} in {time.perf_counter() - started:.1f} s")
    folder = folders[layout.get("layout")]
    if options.grid and folder is not None:
        grid = save_image_folder_grid(Path(root) / folder, options.grid, f"{options.kind} demo")
        print(f"grid: {grid}")
    return True
