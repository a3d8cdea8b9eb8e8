"""Shape bias on cue-conflict stimuli (Geirhos et al., "ImageNet-trained CNNs are biased towards
texture; increasing shape bias improves accuracy and robustness", ICLR 2019, arXiv:1811.12231).

Each stimulus has the shape of one class and the texture of another
(`<root>/<shape>/<shape><i>-<texture><j>.png`). A model's output is reduced to the 16 categories
(for a 1000-way ImageNet output: the mean probability over each category's ImageNet indices,
`cue_conflict_imagenet16.json`; for a model whose own classes are the categories: by name), and
shape bias = shape hits / (shape hits + texture hits), over images whose shape and texture
differ, counting only decisions equal to the shape or the texture class.
`ShapeBiasCallback` runs this at test time and logs `test/shape_bias` and a CSV of decisions.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger
from torch.utils.data import DataLoader

from datamodules.base import ImageSampleDataset, Sample
from datamodules.demo_data import ensure_cue_conflict_demo, parse_cue_conflict_name
from datamodules.image_io import is_image_file
from datamodules.transforms import eval_transform

IMAGENET16_MAPPING_FILE = Path(__file__).with_name("cue_conflict_imagenet16.json")
SHAPE_HIT, TEXTURE_HIT, OTHER, EXCLUDED = "shape", "texture", "other", "excluded"
CUE_CONFLICT_HELP = (
    "Get the cue-conflict stimuli from github.com/rgeirhos/texture-vs-shape "
    "(stimuli/style-transfer-preprocessed-512) and pass that folder, or use the generated demo "
    "set (root: null)."
)


def imagenet16_mapping() -> dict[str, list[int]]:
    """The 16 cue-conflict categories -> their ImageNet class indices."""
    return json.loads(IMAGENET16_MAPPING_FILE.read_text())


def _name_key(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def category_output_indices(
    class_names: Sequence[str], categories: Sequence[str]
) -> dict[str, list[int]]:
    """Which of a model's outputs belong to each category.

    A model whose classes include every category (by name, case and `_`/space insensitive) maps
    one output per category; a 1000-way model uses the ImageNet mapping for the 16 categories.
    """
    by_name = {_name_key(name): index for index, name in enumerate(class_names)}
    if all(_name_key(c) in by_name for c in categories):
        return {c: [by_name[_name_key(c)]] for c in categories}
    mapping = {_name_key(k): v for k, v in imagenet16_mapping().items()}
    if len(class_names) == 1000 and all(_name_key(c) in mapping for c in categories):
        return {c: mapping[_name_key(c)] for c in categories}
    raise ValueError(
        f"cannot map the model's {len(class_names)} classes to the cue-conflict categories "
        f"{list(categories)}: the model needs either those classes by name or 1000 ImageNet "
        f"outputs (categories from {IMAGENET16_MAPPING_FILE.name})"
    )


def reduce_to_categories(
    probabilities: torch.Tensor, output_indices: dict[str, list[int]]
) -> torch.Tensor:
    """(N, num_outputs) probabilities -> (N, num_categories) by the mean over each category's
    outputs (Geirhos et al. use the mean, so categories with many ImageNet classes such as dog
    are not favoured)."""
    return torch.stack([probabilities[:, idx].mean(dim=1) for idx in output_indices.values()], 1)


def decide(shape: str, texture: str, predicted: str) -> str:
    """One image's decision: excluded (shape == texture), shape hit, texture hit or other."""
    if shape == texture:
        return EXCLUDED
    if predicted == shape:
        return SHAPE_HIT
    return TEXTURE_HIT if predicted == texture else OTHER


def shape_bias_from_decisions(decisions: Sequence[str]) -> float:
    """shape hits / (shape hits + texture hits); NaN when there is neither."""
    counts = Counter(decisions)
    hits = counts[SHAPE_HIT] + counts[TEXTURE_HIT]
    return counts[SHAPE_HIT] / hits if hits else math.nan


@dataclass(frozen=True)
class CueConflictImage:
    path: str
    shape: str
    texture: str


def scan_cue_conflict(root: str | Path) -> tuple[list[str], list[CueConflictImage]]:
    """(categories, images) of a cue-conflict folder; categories are the shape folders."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(
            f"no cue-conflict class folders in {root} (expected "
            f"<root>/<shape>/<shape><i>-<texture><j>.png). {CUE_CONFLICT_HELP}"
        )
    categories = [p.name for p in folders]
    images = []
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
            shape, _, texture, _ = parse_cue_conflict_name(path.name)
            if shape != folder.name or texture not in categories:
                raise ValueError(f"{path}: shape/texture {shape!r}/{texture!r} are not categories")
            images.append(CueConflictImage(str(path), shape, texture))
    return categories, images


@dataclass
class ShapeBiasResult:
    shape_bias: float
    rows: list[dict[str, str]]

    def counts(self) -> Counter:
        return Counter(row["decision"] for row in self.rows)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["image", "shape", "texture", "predicted", "decision"]
        )
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()


@torch.no_grad()
def evaluate_shape_bias(
    model: torch.nn.Module,
    root: str | Path,
    class_names: Sequence[str],
    image_size: int,
    resize_size: int | None = None,
    batch_size: int = 64,
    domain_index: int | None = None,
    device: torch.device | str | None = None,
) -> ShapeBiasResult:
    """Classify every cue-conflict image with a `MultiDomainClassifier` and score shape bias.

    Args:
        model: the classifier (its `backbone` and `head`; inputs normalised as in training).
        root: cue-conflict folder.
        class_names: the model's output classes.
        image_size: evaluation crop side.
        resize_size: shorter side before the centre crop (default 256/224 of `image_size`).
        batch_size: images per forward pass.
        domain_index: classify through this domain's head; None treats the stimuli as an unseen
            domain (the shared head, else the mean of the domain heads' probabilities).
        device: where to run (default: the model's device).
    """
    categories, images = scan_cue_conflict(root)
    output_indices = category_output_indices(class_names, categories)
    device = device or next(model.parameters()).device
    samples = [Sample(image.path, 0, 0) for image in images]
    loader = DataLoader(
        ImageSampleDataset(samples, eval_transform(image_size, resize_size)), batch_size=batch_size
    )
    was_training = model.training
    model.eval()
    predicted_indices = []
    for batch in loader:
        pixels, *_ = model.on_after_batch_transfer((batch[0].to(device),), 0)
        features = model.backbone(pixels)
        if domain_index is None:
            logits = model.head.unseen_domain_logits(features)
        else:
            index = torch.full((len(pixels),), domain_index, device=device)
            logits = model.head(features, index)
        reduced = reduce_to_categories(logits.float().softmax(dim=1), output_indices)
        predicted_indices += reduced.argmax(dim=1).tolist()
    model.train(was_training)
    rows = []
    for image, index in zip(images, predicted_indices, strict=True):
        predicted = categories[index]
        rows.append(
            {
                "image": str(Path(image.path).relative_to(root)),
                "shape": image.shape,
                "texture": image.texture,
                "predicted": predicted,
                "decision": decide(image.shape, image.texture, predicted),
            }
        )
    return ShapeBiasResult(shape_bias_from_decisions([r["decision"] for r in rows]), rows)


class ShapeBiasCallback(pl.Callback):
    """At the end of `test`, measures shape bias on a cue-conflict set and logs it.

    Logs `test/shape_bias` (and the counts `test/cue_conflict_{shape,texture,other}`), and with
    an MLflow logger the per-image decisions as the `shape_bias/decisions.csv` artifact.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        domain: str | None = None,
        demo_classes: int = 6,
        demo_images_per_pair: int = 4,
        demo_image_size: int = 96,
        cache_dir: str | None = None,
    ) -> None:
        """Args:
        root: cue-conflict folder (`<root>/<shape>/<shape><i>-<texture><j>.png`, e.g. the 1,280
            stimuli of github.com/rgeirhos/texture-vs-shape); null generates the demo set
            (the demo's shape classes, each drawn with every other class's texture).
        batch_size: images per forward pass.
        domain: classify through this domain's head (e.g. `stylized`); null treats the stimuli
            as an unseen domain (shared head, else the mean of the domain heads).
        demo_classes: demo set only: number of shape classes (must match the demo model's).
        demo_images_per_pair: demo set only: images per (shape, texture) pair.
        demo_image_size: demo set only: side of the generated images.
        cache_dir: demo set only: cache folder (default: $STYLEBENCH_DATA_DIR or
            ~/.cache/stylebench).
        """
        super().__init__()
        self.root = root
        self.batch_size = batch_size
        self.domain = domain
        self.demo_settings = {
            "num_classes": demo_classes,
            "images_per_pair": demo_images_per_pair,
            "image_size": demo_image_size,
        }
        self.cache_dir = cache_dir
        self.result: ShapeBiasResult | None = None

    def stimuli_root(self) -> Path:
        if self.root is None:
            return ensure_cue_conflict_demo(self.cache_dir, **self.demo_settings)
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"cue-conflict folder {root} does not exist. {CUE_CONFLICT_HELP}"
            )
        return root

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        domain_index = None
        if self.domain is not None:
            if self.domain not in pl_module.domain_names:
                raise ValueError(
                    f"ShapeBiasCallback domain={self.domain!r} is not a domain of the model; "
                    f"valid choices: {pl_module.domain_names} (or null for an unseen domain)"
                )
            domain_index = pl_module.domain_names.index(self.domain)
        self.result = evaluate_shape_bias(
            pl_module,
            self.stimuli_root(),
            pl_module.class_names,
            image_size=pl_module.hparams.image_size,
            resize_size=getattr(datamodule, "resize_size", None),
            batch_size=self.batch_size,
            domain_index=domain_index,
        )
        counts = self.result.counts()
        # Every process scores the whole (small) set, so the values agree without syncing.
        pl_module.log("test/shape_bias", self.result.shape_bias)
        for decision in (SHAPE_HIT, TEXTURE_HIT, OTHER):
            pl_module.log(f"test/cue_conflict_{decision}", float(counts[decision]))
        logger = trainer.logger
        if isinstance(logger, MLFlowLogger) and trainer.is_global_zero:
            logger.experiment.log_text(
                logger.run_id, self.result.to_csv(), "shape_bias/decisions.csv"
            )
