"""Arguments of short CLI fits on the generated demo data: each demo config shrunk by its
tests/configs/*_tiny.yaml overlay, caches and outputs under the test's tmp_path.

The demos' cosine schedule (`CosineAnnealingToMaxEpochs`) follows `trainer.max_epochs`: the
epochs are one setting here."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.paths import REPO
from tests.helpers.trees import TINY_DEMO

DEMO_CONFIG = str(REPO / "configs/officehome/demo.yaml")
TINY_CONFIG = str(REPO / "tests/configs/officehome_tiny.yaml")

#: dataset -> (its demo config, or None where the test gives the base config itself; the tiny
#: overlay; the demo cache's folder name beside the test's tmp_path, shared by the session's
#: tests, or None for a cache of the test's own)
DEMOS = {
    "officehome": (DEMO_CONFIG, TINY_CONFIG, "demo-cache"),
    "cifar10": (
        str(REPO / "configs/cifar10/demo.yaml"),
        str(REPO / "tests/configs/cifar10_tiny.yaml"),
        "cifar-demo-cache",
    ),
    "dtd": (None, str(REPO / "tests/configs/dtd_tiny.yaml"), "dtd-demo-cache"),
    "stylized_imagenet": (
        str(REPO / "configs/stylized_imagenet/demo.yaml"),
        str(REPO / "tests/configs/stylized_imagenet_tiny.yaml"),
        None,
    ),
}


def tiny_demo_args(
    tmp_path: Path, *extra: str, epochs: int = 10, dataset: str = "officehome"
) -> list[str]:
    """The `dataset` demo config shrunk by its tests/configs/<dataset>_tiny.yaml (Office-Home:
    4 classes, 30 images per class and domain, 32 px), `epochs` epochs, outputs under
    `tmp_path`, then `extra`."""
    demo, tiny, cache_name = DEMOS[dataset]
    cache = str(tmp_path.parent / cache_name if cache_name else tmp_path / "demo-cache")
    settings = [
        *(("--config", demo) if demo else ()),
        *("--config", tiny),
        *("--data.init_args.cache_dir", cache),
    ]
    if dataset == "stylized_imagenet":
        # the demo's only callback, the shape-bias one, draws its stimuli into the same cache
        settings += ["--trainer.callbacks.init_args.cache_dir", cache]
    return [
        *settings,
        *("--trainer.max_epochs", str(epochs)),
        *("--trainer.default_root_dir", str(tmp_path / "outputs")),
        *extra,
    ]


def tiny_args(tmp_path: Path, *extra: str, epochs: int = 1) -> list[str]:
    """The tiny Office-Home demo, smaller still: 3 classes x 12 images, two built-in domains."""
    return tiny_demo_args(
        tmp_path,
        *("--data.init_args.demo_classes", str(TINY_DEMO["num_classes"])),
        *("--data.init_args.images_per_class", str(TINY_DEMO["images_per_class"])),
        *("--data.init_args.demo_image_size", str(TINY_DEMO["image_size"])),
        *("--data.init_args.domains", "[Art, Product]"),
        *("--data.init_args.style_shift", "null"),
        *extra,
        epochs=epochs,
    )
