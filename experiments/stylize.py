"""Write a stylized copy of an image folder tree with AdaIN (Huang & Belongie, ICCV 2017,
arXiv:1703.06868), the way Stylized-ImageNet was built (Geirhos et al., ICLR 2019).

Any tree works (ImageFolder `<Class>/<image>`, multi-domain `<Domain>/<Class>/<image>`, SIN's
`{train,val}/<wnid>/`): every image under `--content` is written to the same relative path under
`--output`, rendered in the style of one style image drawn (seeded, per file) from `--styles`.
Resumable: files already written are skipped, and each file is written to a temporary name and
renamed, so a killed run leaves no half-written image.

    python -m experiments.stylize --content data/OfficeHome --styles data/painter-by-numbers \\
        --output data/Stylized-OfficeHome --vgg vgg_normalised.pth --decoder decoder.pth
"""

from __future__ import annotations

import argparse
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from datamodules.data.adain import (
    DECODER_FILE,
    ENCODER_FILE,
    AdaINStyleTransfer,
    missing_weights_error,
)
from datamodules.data.image_io import is_image_file, load_rgb


def list_images(root: Path) -> list[Path]:
    """Every image under `root`, relative to it, in a fixed order (hidden folders skipped)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [
            Path(folder, name).relative_to(root) for name in sorted(files) if is_image_file(name)
        ]
    return found


def style_for(relative_path: Path, num_styles: int, seed: int) -> int:
    """The style image of one content file: seeded by its path, so that resuming, sharding or
    adding files never changes the style of the others."""
    key = zlib.crc32(relative_path.as_posix().encode())
    return int(np.random.default_rng([seed, key]).integers(num_styles))


def _resized(image: np.ndarray, shorter_side: int) -> np.ndarray:
    if shorter_side <= 0:
        return image
    height, width = image.shape[:2]
    scale = shorter_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255.0)


def _load_pair(jobs, content_size: int, style_size: int):
    """DataLoader collate function, run in the workers: decode and resize one content/style pair."""
    ((relative, content_path, style_path),) = jobs
    content = load_rgb(content_path, min_side=content_size or None)
    original_size = content.shape[1], content.shape[0]
    content = _to_tensor(_resized(content, content_size))
    style = _to_tensor(_resized(load_rgb(style_path, min_side=style_size or None), style_size))
    return relative, original_size, content, style


def _save_atomically(image: np.ndarray, target: Path, size: tuple[int, int] | None) -> None:
    picture = Image.fromarray(image)
    if size is not None and picture.size != size:
        picture = picture.resize(size, Image.BICUBIC)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    # The format comes from the real suffix, since the temporary name has none PIL knows.
    extension = target.suffix.lower()
    image_format = Image.registered_extensions().get(extension, "PNG")
    options = {"quality": 95} if image_format == "JPEG" else {}
    picture.save(temporary, format=image_format, **options)
    os.replace(temporary, target)


def stylize_tree(
    content_root: str | Path,
    style_root: str | Path,
    output_root: str | Path,
    model: AdaINStyleTransfer,
    alpha: float = 1.0,
    seed: int = 0,
    content_size: int = 512,
    style_size: int = 512,
    keep_size: bool = True,
    workers: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, int]:
    """Stylize every image under `content_root` into the same layout under `output_root`.

    Returns `{"written": n, "skipped": m}` (skipped: already present in the output).
    """
    content_root, style_root, output_root = Path(content_root), Path(style_root), Path(output_root)
    for name, folder in (("content", content_root), ("styles", style_root)):
        if not folder.is_dir():
            raise FileNotFoundError(f"--{name} folder {folder} does not exist")
    styles = list_images(style_root)
    if not styles:
        raise FileNotFoundError(f"no style images under {style_root}")
    contents = list_images(content_root)
    todo = [path for path in contents if not (output_root / path).is_file()]
    jobs = [
        (rel, content_root / rel, style_root / styles[style_for(rel, len(styles), seed)])
        for rel in todo
    ]
    for folder in sorted({(output_root / rel).parent for rel in todo}):
        folder.mkdir(parents=True, exist_ok=True)
        # Temporaries of a killed run: their images were never renamed into place, so redo them.
        for stale in folder.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
    # Images differ in size, so one pair per batch; workers decode, threads encode and write.
    loader = DataLoader(
        jobs,
        batch_size=1,
        num_workers=workers,
        collate_fn=partial(_load_pair, content_size=content_size, style_size=style_size),
    )
    model = model.to(device)
    bar = tqdm(
        total=len(contents),
        initial=len(contents) - len(todo),
        disable=not progress,
        unit="img",
        desc="stylize",
    )
    with ThreadPoolExecutor(max_workers=max(1, workers)) as writers:
        pending = []
        for relative, original_size, content, style in loader:
            output = model.style_transfer(content[None].to(device), style[None].to(device), alpha)
            pixels = (output[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
            size = original_size if keep_size else None
            pending.append(writers.submit(_save_atomically, pixels, output_root / relative, size))
            bar.update()
        for future in pending:
            future.result()
    bar.close()
    return {"written": len(todo), "skipped": len(contents) - len(todo)}


def main(args: Sequence[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content", required=True, help="image tree to stylize")
    parser.add_argument("--styles", required=True, help="folder of style images (searched deep)")
    parser.add_argument("--output", required=True, help="where the stylized tree is written")
    parser.add_argument("--vgg", default=ENCODER_FILE, help=f"path of {ENCODER_FILE}")
    parser.add_argument("--decoder", default=DECODER_FILE, help=f"path of {DECODER_FILE}")
    parser.add_argument("--alpha", type=float, default=1.0, help="style strength in [0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the style choice")
    parser.add_argument(
        "--content-size",
        type=int,
        default=512,
        help="shorter side the content is stylized at (0: as is)",
    )
    parser.add_argument(
        "--style-size", type=int, default=512, help="shorter side of the style image (0: as is)"
    )
    parser.add_argument(
        "--no-keep-size",
        dest="keep_size",
        action="store_false",
        help="write at the stylized size instead of the content's original size",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="decoding processes / writer threads"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args(args)
    missing_weights_error([options.vgg, options.decoder])
    model = AdaINStyleTransfer.from_files(options.vgg, options.decoder)
    summary = stylize_tree(
        options.content,
        options.styles,
        options.output,
        model,
        alpha=options.alpha,
        seed=options.seed,
        content_size=options.content_size,
        style_size=options.style_size,
        keep_size=options.keep_size,
        workers=options.workers,
        device=options.device,
    )
    print(f"stylize: {summary['written']} written, {summary['skipped']} already present")
    return summary


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
