"""Style-shifted evaluation sets: validation and test images re-rendered in another domain's style.

Each image gets one reference image from a different domain of the same split (or from a style
image folder), drawn with a generator seeded by the seed and the image's index, so every run
evaluates exactly the same shifted images. The shift works on the decoded uint8 image before the
evaluation transform: albumentations' FDA (Fourier domain adaptation, Yang & Soatto, CVPR 2020,
arXiv:2004.05498) or HistogramMatching need no network; AdaIN (arXiv:1703.06868) is used only
when its weight files are configured. Labels and domain indices are kept, so the shifted set is
scored per domain exactly like the plain one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import Dataset

from datamodules.data.adain import AdaINStyleTransfer, missing_weights_error
from datamodules.data.dataset import ImageSampleDataset, InMemoryImageDataset
from datamodules.data.image_io import is_image_file, load_rgb
from datamodules.data.layout import Sample

STYLE_SHIFT_METHODS = ("fda", "histogram", "adain")

# The data key albumentations' domain-adaptation transforms read their reference images from.
_REFERENCE_KEY = "style_reference"

StyleShift = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class StyleShiftConfig:
    """Style-shift evaluation settings (`data.init_args.style_shift`).

    Args:
        method: "fda" (swap the low-frequency Fourier amplitudes), "histogram" (match each
            channel's histogram), "adain" (AdaIN style transfer; needs `adain_encoder` and
            `adain_decoder`), or null for no style evaluation.
        every_n_epochs: during `fit`, evaluate the shifted validation set every this many epochs
            and at the last epoch; `validate` and `test` always evaluate it.
        style_folder: a folder of style images (searched recursively) to draw references from
            instead of the other domains; needed for single-domain data.
        seed: seed of the reference draws (together with each image's index).
        fda_beta: size of FDA's swapped low-frequency window, as a fraction of the shorter side
            (0 to 0.5).
        histogram_blend: weight of the matched image against the original (0 to 1).
        adain_encoder: path of AdaIN's `vgg_normalised.pth`.
        adain_decoder: path of AdaIN's `decoder.pth`.
        adain_alpha: AdaIN style strength (1 = full style, as in Stylized-ImageNet).
    """

    method: str | None = None
    every_n_epochs: int = 1
    style_folder: str | None = None
    seed: int = 0
    fda_beta: float = 0.05
    histogram_blend: float = 1.0
    adain_encoder: str | None = None
    adain_decoder: str | None = None
    adain_alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in STYLE_SHIFT_METHODS:
            raise ValueError(
                f"data.style_shift.method={self.method!r} is not known; "
                f"use one of {list(STYLE_SHIFT_METHODS)} or null"
            )
        if self.every_n_epochs < 1:
            raise ValueError(f"data.style_shift.every_n_epochs={self.every_n_epochs} must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.method is not None


class AlbumentationsStyleShift:
    """(content, reference) -> content in the reference's style, by an albumentations transform.

    The transform's random ranges are collapsed to single values and the reference list holds
    one image, so the result depends only on the two images: the seeded reference draw is the
    only randomness of the shifted set.
    """

    def __init__(self, transform: A.BasicTransform) -> None:
        """Settings (each one also a command-line option).

        Args:
            transform: a domain-adaptation transform reading its reference from "style_reference".
        """
        self.transform = transform

    def __call__(self, content: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return self.transform(image=content, **{_REFERENCE_KEY: [reference]})["image"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


class AdaINStyleShift:
    """(content, reference) -> AdaIN stylization; the network is loaded on first use.

    Loading lazily keeps the object cheap to send to DataLoader workers (each loads the weights
    once) and keeps the network out of memory in runs that do not use it.
    """

    def __init__(self, encoder_path: str, decoder_path: str, alpha: float = 1.0) -> None:
        """Settings (each one also a command-line option).

        Args:
            encoder_path: AdaIN's `vgg_normalised.pth`.
            decoder_path: AdaIN's `decoder.pth`.
            alpha: style strength in [0, 1].
        """
        # Fail when the DataModule is built, not in a worker halfway through validation.
        missing_weights_error([encoder_path, decoder_path])
        self.encoder_path, self.decoder_path, self.alpha = encoder_path, decoder_path, alpha
        self._network = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_network": None}

    def __call__(self, content: np.ndarray, reference: np.ndarray) -> np.ndarray:
        if self._network is None:
            self._network = AdaINStyleTransfer.from_files(self.encoder_path, self.decoder_path)
        height, width = content.shape[:2]
        stylized = self._network.style_transfer(
            _to_unit_tensor(content), _to_unit_tensor(reference), alpha=self.alpha
        )
        # The decoder's output is rounded up to a multiple of 8 pixels: crop back.
        stylized = stylized[0, :, :height, :width].permute(1, 2, 0)
        return (stylized * 255).round().to(torch.uint8).numpy()


def _to_unit_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def create_style_shift(config: StyleShiftConfig) -> StyleShift:
    """The shift function of a config with a method."""
    if config.method == "fda":
        transform = A.FDA(
            beta_limit=(config.fda_beta, config.fda_beta), metadata_key=_REFERENCE_KEY, p=1.0
        )
        return AlbumentationsStyleShift(transform)
    if config.method == "histogram":
        blend = (config.histogram_blend, config.histogram_blend)
        transform = A.HistogramMatching(blend_ratio=blend, metadata_key=_REFERENCE_KEY, p=1.0)
        return AlbumentationsStyleShift(transform)
    if config.method == "adain":
        if not (config.adain_encoder and config.adain_decoder):
            raise ValueError(
                "data.style_shift.method=adain needs data.style_shift.adain_encoder "
                "(vgg_normalised.pth) and data.style_shift.adain_decoder (decoder.pth); "
                "or use method fda or histogram, which need no weights"
            )
        return AdaINStyleShift(config.adain_encoder, config.adain_decoder, config.adain_alpha)
    raise ValueError(f"data.style_shift.method={config.method!r} has no shift function")


def style_folder_images(folder: str | Path) -> list[str]:
    """The image files under `folder`, recursively, in a fixed order."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.style_shift.style_folder {root} is not a folder")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise FileNotFoundError(f"data.style_shift.style_folder {root} holds no image files")
    return paths


def draw_references(
    samples: Sequence[Sample], seed: int, style_images: Sequence[str] | None = None
) -> list[str]:
    """One reference image path per sample, drawn with a generator seeded by (seed, index).

    Without `style_images` the reference comes from the samples of the other domains, so an
    image is never shifted towards its own domain's style.
    """
    if style_images is not None:
        pools = {index: list(style_images) for index in {s.domain_index for s in samples}}
    else:
        domains = sorted({sample.domain_index for sample in samples})
        if len(domains) < 2:
            raise ValueError(
                "the style-shifted set draws references from the other domains, but this split "
                "has one domain; set data.style_shift.style_folder to a folder of style images"
            )
        pools = {d: [s.path for s in samples if s.domain_index != d] for d in domains}
    references = []
    for index, sample in enumerate(samples):
        pool = pools[sample.domain_index]
        # Seeding per index (not one stream) keeps each image's reference fixed when the split
        # grows or is evaluated in another order.
        rng = np.random.default_rng((seed, index))
        references.append(pool[int(rng.integers(len(pool)))])
    return references


class StyleShiftedDataset(Dataset):
    """The images of an evaluation dataset, each shifted towards its drawn reference's style.

    Wraps the plain dataset, so decoding size, evaluation transform, labels and domain indices
    are the plain set's own: only the style differs between the two.
    """

    def __init__(
        self,
        plain: ImageSampleDataset | InMemoryImageDataset,
        reference_paths: Sequence[str],
        shift: StyleShift,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            plain: the split's plain evaluation dataset (it provides the content images).
            reference_paths: one reference image per sample (see `draw_references`).
            shift: (content, reference) uint8 HxWx3 -> shifted uint8 HxWx3.
        """
        if len(reference_paths) != len(plain):
            raise ValueError(f"{len(reference_paths)} references for {len(plain)} samples")
        self.plain = plain
        self.reference_paths = list(reference_paths)
        self.shift = shift

    @property
    def samples(self) -> list[Sample]:
        return self.plain.samples

    def __len__(self) -> int:
        return len(self.plain)

    def shifted_image(self, index: int) -> np.ndarray:
        """The shifted uint8 image before the evaluation transform."""
        decode_side = self.plain.min_decode_side
        content = self.plain.decoded_image(index)
        reference = load_rgb(self.reference_paths[index], min_side=decode_side)
        return self.shift(content, reference)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        sample = self.plain.samples[index]
        try:
            image = self.shifted_image(index)
        except OSError:
            # Same rule as the plain set: with `on_bad_image: skip` the collate drops it (the
            # plain set already records the file).
            if self.plain.on_bad_image == "error":
                raise
            return None
        return self.plain.transform(image), sample.label, sample.domain_index


def style_shifted_sets(
    datasets: dict[str, Dataset],
    config: StyleShiftConfig,
    shift: StyleShift,
    wrap: Callable[[Dataset, Sequence[str], StyleShift], Dataset],
) -> dict[str, Dataset]:
    """`{"val_style": ..., "test_style": ...}`: the plain evaluation sets in `datasets`, each
    image shifted towards a drawn reference's style; `wrap(plain, references, shift)` builds
    one (`StyleShiftedDataset`, or its variant for the plain set's source)."""
    style_images = style_folder_images(config.style_folder) if config.style_folder else None
    shifted = {}
    for split in ("val", "test"):
        plain = datasets[split]
        references = draw_references(plain.samples, config.seed, style_images)
        shifted[f"{split}_style"] = wrap(plain, references, shift)
    return shifted


def style_evaluation_due(trainer: pl.Trainer | None, every_n_epochs: int) -> bool:
    """Whether the shifted validation set is evaluated now: always outside `fit` and in the
    sanity check (which catches a broken shift before the first epoch), else every N epochs and
    at the last epoch."""
    if trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
        return True
    epoch = trainer.current_epoch + 1
    last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
    return epoch % every_n_epochs == 0 or last


class ScheduledLoader:
    """A DataLoader that yields its batches only when `is_due()`, and nothing otherwise.

    Lightning runs every validation DataLoader at every validation; skipping at the loader (not
    in the step) saves the decoding and the shift as well as the forward pass. It is a plain
    iterable, not a DataLoader, so Lightning leaves it (and the sampler the DataModule chose,
    distributed or not) as it is.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, is_due: Callable[[], bool]) -> None:
        """Settings (each one also a command-line option).

        Args:
            loader: the DataLoader of the shifted set.
            is_due: called at the start of each pass.
        """
        self.loader = loader
        self.is_due = is_due

    def __iter__(self) -> Iterator:
        return iter(self.loader) if self.is_due() else iter(())

    def __len__(self) -> int:
        return len(self.loader)
