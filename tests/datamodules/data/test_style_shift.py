"""The style-shifted evaluation set: other-domain references, seeded, labels kept, cadence."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from datamodules.data.style_shift import (
    AdaINStyleShift,
    ScheduledLoader,
    StyleShiftConfig,
    create_style_shift,
    style_evaluation_due,
)
from datamodules.officehome import OfficeHomeDataModule
from tests.helpers.trees import make_officehome_tree, write_jpeg

CLASSES = ("Bike", "Bottle", "Chair")


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """Two domains, three classes, five noise images each: 6 validation images per domain."""
    root = tmp_path / "officehome"
    make_officehome_tree(root, images_per_class={"Art": 5, "Clipart": 5}, classes=CLASSES)
    return root


def build(root: Path, style_shift: StyleShiftConfig | None, **kwargs) -> OfficeHomeDataModule:
    data = OfficeHomeDataModule(
        root=str(root),
        domains=kwargs.pop("domains", ["Art", "Clipart"]),
        image_size=24,
        val_fraction=0.4,
        batch_size=4,
        num_workers=0,
        style_shift=style_shift,
        **kwargs,
    )
    data.setup("fit")
    return data


@pytest.mark.parametrize("method", ["fda", "histogram"])
def test_shifted_images_differ_keep_labels_and_take_another_domains_style(
    small_root: Path, method: str
) -> None:
    data = build(small_root, StyleShiftConfig(method=method))
    plain, shifted = data.datasets["val"], data.datasets["val_style"]
    assert len(shifted) == len(plain) == 12
    domain_of_path = {s.path: s.domain_index for s in plain.samples}
    for index in range(len(plain)):
        plain_image, plain_label, plain_domain = plain[index]
        shifted_image, label, domain = shifted[index]
        assert (label, domain) == (plain_label, plain_domain)
        assert shifted_image.dtype == torch.uint8 and shifted_image.shape == plain_image.shape
        assert not torch.equal(shifted_image, plain_image)
        assert domain_of_path[shifted.reference_paths[index]] != domain


def test_same_seed_gives_the_same_images_and_another_seed_other_references(
    small_root: Path,
) -> None:
    first = build(small_root, StyleShiftConfig(method="fda", seed=3)).datasets["test_style"]
    again = build(small_root, StyleShiftConfig(method="fda", seed=3)).datasets["test_style"]
    other = build(small_root, StyleShiftConfig(method="fda", seed=4)).datasets["test_style"]
    assert first.reference_paths == again.reference_paths
    for index in range(len(first)):
        assert torch.equal(first[index][0], again[index][0])
    assert first.reference_paths != other.reference_paths


def test_loaders_plain_alone_without_style_shift_and_plain_plus_shifted_with_it(
    small_root: Path,
) -> None:
    assert isinstance(build(small_root, None).val_dataloader(), DataLoader)
    data = build(small_root, StyleShiftConfig(method="histogram"))
    for loaders in (data.val_dataloader(), data.test_dataloader()):
        plain, shifted = loaders
        plain_batch, shifted_batch = next(iter(plain)), next(iter(shifted))
        torch.testing.assert_close(plain_batch[1], shifted_batch[1])  # same labels, same order
        torch.testing.assert_close(plain_batch[2], shifted_batch[2])
    assert isinstance(data.val_dataloader()[1], ScheduledLoader)  # test always runs it


def test_style_folder_supplies_the_references(small_root: Path, tmp_path: Path) -> None:
    for index in range(3):
        write_jpeg(tmp_path / "styles" / "nested" / f"style{index}.jpg", seed=100 + index)
    data = build(
        small_root,
        StyleShiftConfig(method="histogram", style_folder=str(tmp_path / "styles")),
        domains=["Art"],
    )
    references = data.datasets["val_style"].reference_paths
    assert set(references) <= {str(p) for p in (tmp_path / "styles").rglob("*.jpg")}


def test_single_domain_without_style_folder_says_what_to_set(small_root: Path) -> None:
    with pytest.raises(ValueError, match="style_folder"):
        build(small_root, StyleShiftConfig(method="fda"), domains=["Art"])


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="method='sketch'"):
        StyleShiftConfig(method="sketch")
    with pytest.raises(ValueError, match="every_n_epochs"):
        StyleShiftConfig(method="fda", every_n_epochs=0)
    with pytest.raises(ValueError, match="adain_encoder"):
        create_style_shift(StyleShiftConfig(method="adain"))
    missing = StyleShiftConfig(method="adain", adain_encoder="nope.pth", adain_decoder="no.pth")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        create_style_shift(missing)


def test_adain_shift_keeps_the_content_size(tmp_path: Path) -> None:
    from datamodules.data.adain import AdaINStyleTransfer

    encoder, decoder = tmp_path / "vgg_normalised.pth", tmp_path / "decoder.pth"
    encoder.touch()
    decoder.touch()
    shift = AdaINStyleShift(str(encoder), str(decoder))
    torch.manual_seed(0)
    shift._network = AdaINStyleTransfer()  # random weights: only shapes are checked here
    rng = np.random.default_rng(0)
    content = rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    reference = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    result = shift(content, reference)
    assert result.dtype == np.uint8 and result.shape == content.shape


def fake_trainer(epoch: int, max_epochs: int = 5, fn=TrainerFn.FITTING, sanity=False):
    return SimpleNamespace(
        state=SimpleNamespace(fn=fn),
        sanity_checking=sanity,
        current_epoch=epoch,
        max_epochs=max_epochs,
    )


def test_cadence_every_n_epochs_last_epoch_sanity_check_and_outside_fit() -> None:
    due = [style_evaluation_due(fake_trainer(epoch), every_n_epochs=2) for epoch in range(5)]
    assert due == [False, True, False, True, True]  # epochs 2 and 4 (1-based), and the last
    assert style_evaluation_due(fake_trainer(0, sanity=True), every_n_epochs=2)
    assert style_evaluation_due(fake_trainer(0, fn=TrainerFn.TESTING), every_n_epochs=2)
    assert style_evaluation_due(fake_trainer(0, fn=TrainerFn.VALIDATING), every_n_epochs=2)
    assert style_evaluation_due(None, every_n_epochs=2)


def test_scheduled_loader_yields_nothing_when_not_due() -> None:
    loader = DataLoader(list(range(6)), batch_size=4)
    due = {"now": False}
    scheduled = ScheduledLoader(loader, lambda: due["now"])
    assert len(scheduled) == 2 and list(scheduled) == []
    due["now"] = True
    assert [batch.tolist() for batch in scheduled] == [[0, 1, 2, 3], [4, 5]]
