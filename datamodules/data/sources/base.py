"""What every sample source provides to the DataModule: domains, classes, splits, datasets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from torch.utils.data import DataLoader, Dataset

from datamodules.data.layout import DomainData
from datamodules.data.samples import SampleArray


class SampleSource(ABC):
    """Where a DataModule's samples come from; the DataModule delegates to it.

    A source reads the DataModule's settings (split fractions and seed, held-out and target
    domains, loader settings) and calls its public members (`domains`, `class_names`,
    `split_samples`, which the DataModule caches and a dataset may override), so it holds no
    copy of them.

    Args:
        datamodule: the `MultiDomainDataModule` it serves.
    """

    def __init__(self, datamodule) -> None:
        self.datamodule = datamodule

    @abstractmethod
    def domains(self) -> list[DomainData]:
        """Every domain's class folders and files."""

    @abstractmethod
    def domain_names(self) -> list[str]:
        """The domains' names, in domain-index order."""

    @abstractmethod
    def class_names(self) -> list[str]:
        """The class list all domains share."""

    @abstractmethod
    def split_samples(self) -> dict[str, SampleArray]:
        """Every split's samples over all domains."""

    @abstractmethod
    def prepare_data(self) -> None:
        """What Lightning's `prepare_data` does, once per node before `setup`."""

    @abstractmethod
    def dataset(self, split: str, transform: Callable, min_decode_side: int | None) -> Dataset:
        """The split's map-style Dataset of `(uint8 image, label, domain index)` items."""

    @abstractmethod
    def style_shifted(self, plain: Dataset, references: Sequence[str], shift: Callable) -> Dataset:
        """The style-shifted copy of an evaluation dataset (`references`: one per sample)."""

    def training_loader(self, split: str) -> DataLoader | None:
        """The loader of a training split, where the source streams it itself; None: the
        DataModule's own loader over `dataset(split, ...)`."""
        return None

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the source (e.g. stream positions); empty: nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 (optional: nothing by default)
        """Restore `state_dict()`'s content, before the loaders are built."""
