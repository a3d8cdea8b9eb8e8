"""Input pipeline throughput: decode + training augmentation + collate, ours against torchvision.

Photo-like JPEGs (smooth colour noise with shapes and grain, quality 90, half 800x600 and half
1024x768, like Office-Home's photos) are generated into a temporary folder. Two pipelines read
them into batches of 224-px training crops:

- ours: the project's `ImageSampleDataset` (JPEG draft decoding at reduced size, albumentations
  RandomResizedCrop + flip on uint8, uint8 collate) and `normalize_batch` once per batch;
- baseline: PIL full-size decoding + `torchvision.transforms.v2` RandomResizedCrop(224),
  RandomHorizontalFlip, ToImage, ToDtype(float32, scale=True), Normalize per image;
- shards: the same images written as LitData shards (`experiments.make_shards`'s writer:
  short side 256, JPEG quality 90; written before timing) and streamed by the DataModules'
  training path (`StreamingImageDataset` in a `StreamingDataLoader`, shuffled), with our
  augmentation and `normalize_batch`.

Per core: `num_workers=0` with one torch and one OpenCV thread, the two pipelines alternating
over several passes (median images/s). With workers: `num_workers=N` persistent workers, one
untimed pass to start them, then timed passes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from litdata import StreamingDataLoader
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

from benchmarks import machine_description, write_result
from datamodules.data.dataset import ImageSampleDataset
from datamodules.data.layout import Sample
from datamodules.data.shard_writer import SampleEncoder, write_split
from datamodules.data.shards import StreamingImageDataset
from datamodules.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize_batch,
    train_transform,
)

NAME = "input_pipeline"
SIZES = ((800, 600), (1024, 768))


def photo_like_image(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour field + a few blurred shapes + sensor-like grain: compresses like a photo."""
    coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        x1, y1 = x0 + rng.integers(30, width // 2), y0 + rng.integers(30, height // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    grain = rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))


def generate_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Write `count` photo-like JPEGs (alternating the two sizes) into `folder`."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        path = folder / f"{index:05d}.jpg"
        photo_like_image(width, height, rng).save(path, quality=90)
        paths.append(path)
    return paths


class TorchvisionBaselineDataset(Dataset):
    """PIL full decoding + torchvision.transforms.v2 float pipeline, per image."""

    def __init__(self, paths: list[Path], image_size: int) -> None:
        from torchvision.transforms import v2

        self.paths = paths
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), 0


def write_shards(paths: list[Path], folder: Path, short_side: int = 256) -> Path:
    """The images as LitData shards (what `experiments.make_shards` writes)."""
    source = ImageSampleDataset([Sample(str(path), 0, 0) for path in paths], transform=None)
    encoder = SampleEncoder(source, short_side, "jpeg", 90)
    write_split(encoder, len(paths), folder / "train")
    return folder / "train"


def make_loaders(
    paths, image_size: int, batch_size: int, num_workers: int, shards: Path | None = None
) -> dict:
    """Name -> (DataLoader, whether its batches still need `normalize_batch`)."""
    ours = ImageSampleDataset(
        [Sample(str(path), 0, 0) for path in paths],
        train_transform(image_size),
        min_decode_side=image_size,
    )
    baseline = TorchvisionBaselineDataset(paths, image_size)
    options = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "worker_init_fn": _one_thread_worker,
    }
    loaders = {
        "ours": (DataLoader(ours, **options), True),
        "torchvision_baseline": (DataLoader(baseline, **options), False),
    }
    if shards is not None:
        streamed = StreamingImageDataset(
            str(shards), train_transform(image_size), min_decode_side=image_size, shuffle=True
        )
        loaders["shards"] = (StreamingDataLoader(streamed, **options), True)
    return loaders


def _one_thread_worker(_worker_id: int) -> None:
    # One process = one core: OpenCV would otherwise start its own thread pool in each worker.
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def one_pass(loader: DataLoader, normalize: bool) -> tuple[int, float]:
    """Images delivered and seconds taken for one pass over the loader (as float batches)."""
    start = time.perf_counter()
    count = 0
    for batch in loader:
        images = batch[0]
        if normalize:
            # Counted here, on the CPU, although training does it on the accelerator.
            images = normalize_batch(images)
        count += images.shape[0]
    return count, time.perf_counter() - start


def run(
    num_images: int = 256,
    image_size: int = 224,
    batch_size: int = 16,
    repeats: int = 5,
    num_workers: int = 2,
    with_shards: bool = True,
) -> dict:
    """Measure the pipelines per core and with workers; return the result dictionary."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stylebench-jpegs-") as folder:
        paths = generate_jpegs(Path(folder), num_images)
        shards = write_shards(paths, Path(folder) / "shards") if with_shards else None
        settings_by_mode = [("per core (num_workers=0)", 0)]
        if num_workers > 0:
            settings_by_mode.append((f"num_workers={num_workers}", num_workers))
        for mode, workers in settings_by_mode:
            torch.manual_seed(0)
            loaders = make_loaders(paths, image_size, batch_size, workers, shards)
            if workers > 0:
                for loader, normalize in loaders.values():
                    one_pass(loader, normalize)  # starts the persistent workers
            rates: dict[str, list[float]] = {name: [] for name in loaders}
            for _ in range(repeats):
                for name, (loader, normalize) in loaders.items():
                    count, seconds = one_pass(loader, normalize)
                    rates[name].append(count / seconds)
            baseline = statistics.median(rates["torchvision_baseline"])
            for name, values in rates.items():
                rows.append(
                    {
                        "pipeline": name,
                        "mode": mode,
                        "images_per_s": statistics.median(values),
                        "repeats": len(values),
                        "ratio_to_baseline": statistics.median(values) / baseline,
                    }
                )
            del loaders
    per_core = {row["pipeline"]: row for row in rows if row["mode"].startswith("per core")}
    targets = {"ours_per_core_ge_2x_baseline": per_core["ours"]["ratio_to_baseline"] >= 2.0}
    extra = {}
    if with_shards:
        ratio = per_core["shards"]["ratio_to_baseline"]
        extra["shards_ratio"] = ratio
        targets["shards_per_core_ge_3x_baseline"] = ratio >= 3.0
    return {
        "name": NAME,
        "machine": machine_description("cpu"),
        "settings": {
            "num_images": num_images,
            "jpeg_sizes": " and ".join(f"{w}x{h}" for w, h in SIZES),
            "jpeg_quality": 90,
            "image_size": image_size,
            "batch_size": batch_size,
            "passes": repeats,
            "workers": num_workers,
            "shard_short_side": 256 if with_shards else None,
        },
        **extra,
        "rows": rows,
        "targets": targets,
    }


COLUMNS = ("pipeline", "mode", "images_per_s", "repeats", "ratio_to_baseline")

NOTES = """
images/s = images delivered as normalised float batches, decode + augmentation + collate (ours
also `normalize_batch`, here on the CPU), median over `repeats` passes over the generated JPEGs,
the pipelines alternating. Per core: `num_workers=0`, one torch thread, one OpenCV thread.
shards: the same images written once (untimed) as LitData shards, short side 256,
JPEG quality 90, streamed shuffled; `shards_ratio` is its per-core images/s over the
baseline's in the same run.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per pipeline")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None) -> dict:
    """Run with parsed options and write the result files."""
    result = run(args.num_images, args.image_size, args.batch_size, args.repeats, args.num_workers)
    write_result(args.name, result, COLUMNS, NOTES, results_dir)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.input_pipeline [--num-images ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
