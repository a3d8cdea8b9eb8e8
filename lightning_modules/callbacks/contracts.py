"""What the callbacks need from the LightningModule and the DataModule, as Protocols.

The callbacks do not import the model or the data code: they name what they read here, and
check it once (`require`, at `setup`) so that a model or DataModule lacking a member fails with
one message naming it, not with an AttributeError halfway through a run.
`MultiDomainClassifier` and `MultiDomainDataModule` satisfy all of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset


@runtime_checkable
class EvaluatedModel(Protocol):
    """A model that keeps its last evaluation's confusion matrices (`EvaluationArtifacts`)."""

    #: stage ("val", "test") -> domain name -> confusion matrix (rows: true class).
    evaluation_results: dict[str, dict[str, torch.Tensor]]
    #: The output classes, in output order.
    class_names: Sequence[str]


@runtime_checkable
class DomainHeads(Protocol):
    """Classifier heads over backbone features: one per domain, and an unseen-domain rule."""

    def __call__(self, features: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        """Logits of each sample through its domain's head."""
        ...

    def unseen_domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits for samples of a domain without a head."""
        ...


@runtime_checkable
class CueConflictModel(Protocol):
    """A model that classifies cue-conflict stimuli (`ShapeBiasCallback`)."""

    #: Images (normalised, as in training) -> features.
    backbone: nn.Module
    #: Features -> logits (`DomainHeads`).
    head: Any
    #: The output classes, in output order.
    class_names: Sequence[str]
    #: The domains, in domain-index order.
    domain_names: Sequence[str]


class CueConflictStimulus(Protocol):
    """One stimulus: its file and the categories of its shape and its texture."""

    path: str
    shape: str
    texture: str


class CueConflictStimuli(Protocol):
    """A cue-conflict set ready to evaluate."""

    root: Path
    categories: list[str]
    images: Sequence[CueConflictStimulus]
    #: Yields (uint8 CHW image through the evaluation transform, index into `images`).
    dataset: Dataset


@runtime_checkable
class CueConflictData(Protocol):
    """A DataModule that provides cue-conflict stimuli and normalises batches."""

    def cue_conflict_set(
        self,
        root: str | None = None,
        cache_dir: str | None = None,
        demo_classes: int = 6,
        demo_images_per_pair: int = 4,
        demo_image_size: int = 96,
    ) -> CueConflictStimuli:
        """The stimuli in `root`, or the generated demo set when `root` is None."""
        ...

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise a batch on the device: uint8 images (element 0) -> float."""
        ...


@runtime_checkable
class BadImageReporting(Protocol):
    """A DataModule that can skip undecodable images and report them (`BadImagesCallback`)."""

    #: "error" or "skip".
    on_bad_image: str

    def bad_images(self, split: str | None = None) -> list[str]:
        """Paths of the distinct images skipped so far (in `split`, or in any split)."""
        ...


T = TypeVar("T")


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names a Protocol declares (its own and its bases')."""
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass is Protocol:  # the declaring classes come before it in the MRO
            break
        declared = [*inspect.get_annotations(klass)]
        declared += [n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")]
        declared += ["__call__"] if "__call__" in vars(klass) else []
        names += [n for n in declared if n not in names]
    return names


def require(obj: Any, protocol: type[T], user: str) -> T:
    """`obj` if it satisfies `protocol`, else a TypeError naming `user` and what is missing."""
    if isinstance(obj, protocol):
        return obj
    missing = [name for name in protocol_members(protocol) if not hasattr(obj, name)]
    summary = (protocol.__doc__ or "").strip().splitlines()[0]
    raise TypeError(
        f"{user} needs {protocol.__name__} ({summary}); {type(obj).__name__} lacks "
        + ", ".join(missing)
    )
