"""Shape bias on cue-conflict stimuli (Geirhos et al., "ImageNet-trained CNNs are biased towards
texture; increasing shape bias improves accuracy and robustness", ICLR 2019, arXiv:1811.12231).

Each stimulus has the shape of one class and the texture of another
(`<root>/<shape>/<shape><i>-<texture><j>.png`). A model's output is reduced to the 16 categories
(for a 1000-way ImageNet output: the mean probability over each category's ImageNet indices,
`cue_conflict_imagenet16.json`; for a model whose own classes are the categories: by name), and
shape bias = shape hits / (shape hits + texture hits), over images whose shape and texture
differ, counting only decisions equal to the shape or the texture class.
`ShapeBiasCallback` runs this at test time and logs `test/shape_bias` and a CSV of decisions.
The stimuli come from the DataModule (`cue_conflict_set`; the folder is read by
`datamodules/data/cue_conflict.py`); this module only scores them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lightning_modules.callbacks.contracts import (
    CueConflictData,
    CueConflictModel,
    CueConflictStimuli,
    DomainHeads,
    require,
)
from lightning_modules.tracking import find_mlflow_logger

IMAGENET16_MAPPING_FILE = Path(__file__).with_name("cue_conflict_imagenet16.json")
SHAPE_HIT, TEXTURE_HIT, OTHER, EXCLUDED = "shape", "texture", "other", "excluded"


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
    model: CueConflictModel,
    stimuli: CueConflictStimuli,
    normalize: Callable,
    batch_size: int = 64,
    domain_index: int | None = None,
    device: torch.device | str | None = None,
) -> ShapeBiasResult:
    """Classify every cue-conflict stimulus and score shape bias.

    Args:
        model: the classifier (its `backbone`, `head` and `class_names`).
        stimuli: the set (`root`, `categories`, `images`, and a `dataset` of uint8 images
            through the evaluation transform with their indices into `images`).
        normalize: the DataModule's `on_after_batch_transfer`: (batch tuple, dataloader index)
            -> the batch with its images normalised as in training.
        batch_size: images per forward pass.
        domain_index: classify through this domain's head; None treats the stimuli as an unseen
            domain (the shared head, else the mean of the domain heads' probabilities).
        device: where to run (default: the model's device).
    """
    head = require(model.head, DomainHeads, "evaluate_shape_bias (model.head)")
    output_indices = category_output_indices(model.class_names, stimuli.categories)
    device = device or next(model.backbone.parameters()).device
    loader = DataLoader(stimuli.dataset, batch_size=batch_size)
    was_training = model.training
    model.eval()
    predicted: dict[int, str] = {}
    for images, indices in loader:
        pixels, *_ = normalize((images.to(device),), 0)
        features = model.backbone(pixels)
        if domain_index is None:
            logits = head.unseen_domain_logits(features)
        else:
            logits = head(features, torch.full((len(pixels),), domain_index, device=device))
        reduced = reduce_to_categories(logits.float().softmax(dim=1), output_indices)
        for index, category in zip(indices.tolist(), reduced.argmax(dim=1).tolist(), strict=True):
            predicted[index] = stimuli.categories[category]
    model.train(was_training)
    rows = [
        {
            "image": str(Path(image.path).relative_to(stimuli.root)),
            "shape": image.shape,
            "texture": image.texture,
            "predicted": predicted[index],
            "decision": decide(image.shape, image.texture, predicted[index]),
        }
        for index, image in enumerate(stimuli.images)
    ]
    return ShapeBiasResult(shape_bias_from_decisions([r["decision"] for r in rows]), rows)


class ShapeBiasCallback(pl.Callback):
    """At the end of `test`, measures shape bias on a cue-conflict set and logs it.

    Logs `test/shape_bias` (and the counts `test/cue_conflict_{shape,texture,other}`), and with
    an MLflow logger the per-image decisions as the `shape_bias/decisions.csv` artifact.
    Needs a model with `backbone`, `head`, `class_names`, `domain_names` (`CueConflictModel`)
    and a DataModule with `cue_conflict_set` and `on_after_batch_transfer` (`CueConflictData`).
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
        """Settings (each one also a command-line option).

        Args:
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
            "demo_classes": demo_classes,
            "demo_images_per_pair": demo_images_per_pair,
            "demo_image_size": demo_image_size,
        }
        self.cache_dir = cache_dir
        self.result: ShapeBiasResult | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require(pl_module, CueConflictModel, "ShapeBiasCallback")
        require(pl_module.head, DomainHeads, "ShapeBiasCallback (model.head)")
        require(trainer.datamodule, CueConflictData, "ShapeBiasCallback")
        if self.domain is not None and self.domain not in pl_module.domain_names:
            raise ValueError(
                f"ShapeBiasCallback domain={self.domain!r} is not a domain of the model; "
                f"valid choices: {pl_module.domain_names} (or null for an unseen domain)"
            )

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule: CueConflictData = trainer.datamodule
        model: CueConflictModel = pl_module
        domain_index = None if self.domain is None else model.domain_names.index(self.domain)
        stimuli = datamodule.cue_conflict_set(
            root=self.root, cache_dir=self.cache_dir, **self.demo_settings
        )
        self.result = evaluate_shape_bias(
            model,
            stimuli,
            datamodule.on_after_batch_transfer,
            batch_size=self.batch_size,
            domain_index=domain_index,
            device=pl_module.device,
        )
        counts = self.result.counts()
        # Every process scores the whole (small) set, so the values agree without syncing.
        pl_module.log("test/shape_bias", self.result.shape_bias)
        for decision in (SHAPE_HIT, TEXTURE_HIT, OTHER):
            pl_module.log(f"test/cue_conflict_{decision}", float(counts[decision]))
        logger = find_mlflow_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            logger.experiment.log_text(
                logger.run_id, self.result.to_csv(), "shape_bias/decisions.csv"
            )
