"""Domains added by configuration: ImageFolder and image-list layouts, class checks and mapping,
registered readers, and unlabelled adaptation targets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pytorch_lightning.utilities import CombinedLoader

from datamodules.base import TARGET_TRAIN_SPLIT, UNLABELLED
from datamodules.data.extra_domains import ExtraDomain, register_domain_layout
from datamodules.data.layout import DatasetLayoutError
from datamodules.demo import ensure_officehome_demo
from datamodules.officehome import OfficeHomeDemoDataModule
from tests.helpers.trees import TINY_DEMO, write_image_list


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_officehome_demo(tmp_path_factory.mktemp("demo-cache"), **TINY_DEMO)


def copy_domain(demo_root: Path, domain: str, destination: Path) -> Path:
    """A new domain folder: a copy of one demo domain's images under another name."""
    shutil.copytree(demo_root / domain, destination)
    return destination


def make_datamodule(demo_root: Path, **kwargs) -> OfficeHomeDemoDataModule:
    settings = {"domains": ["Art", "Product"], "image_size": 16, "batch_size": 4}
    settings.update(kwargs)
    return OfficeHomeDemoDataModule(root=str(demo_root), num_workers=0, **settings)


def test_image_folder_domain_is_trained_like_a_built_in_one(demo_root, tmp_path) -> None:
    sketch = copy_domain(demo_root, "Clipart", tmp_path / "Sketch")
    data = make_datamodule(demo_root, extra_domains=[ExtraDomain("Sketch", root=str(sketch))])
    assert data.domain_names == ["Art", "Product", "Sketch"]
    assert data.trained_domains == ["Art", "Product", "Sketch"]
    counts = data.split_counts()
    assert counts["train"]["Sketch"] + counts["val"]["Sketch"] == 3 * 12


@pytest.mark.parametrize("label_as_index", [True, False], ids=["index", "class_name"])
def test_image_list_domain_reads_index_or_name_labels(demo_root, tmp_path, label_as_index) -> None:
    images = copy_domain(demo_root, "Clipart", tmp_path / "images")
    list_file = tmp_path / "sketch.txt"
    classes = write_image_list(images, list_file, label_as_index)
    domain = ExtraDomain("Sketch", image_list=str(list_file), image_root=str(images))
    data = make_datamodule(demo_root, extra_domains=[domain])
    sketch = data.domains[data.domain_names.index("Sketch")]
    for name in classes:
        expected = sorted(str(p) for p in (images / name).iterdir())
        assert sketch.files_by_class[name] == expected


def test_image_list_rejects_a_label_outside_the_classes(demo_root, tmp_path) -> None:
    list_file = tmp_path / "bad.txt"
    list_file.write_text("a.jpg 0\nb.jpg 7\n")
    with pytest.raises(DatasetLayoutError, match=r"bad.txt:2: label 7"):
        make_datamodule(
            demo_root, extra_domains=[ExtraDomain("X", image_list=str(list_file))]
        ).setup("fit")


def test_class_mismatch_names_the_classes_and_class_mapping_fixes_it(demo_root, tmp_path) -> None:
    sketch = copy_domain(demo_root, "Clipart", tmp_path / "Sketch")
    ours = sorted(p.name for p in sketch.iterdir())
    (sketch / ours[0]).rename(sketch / "their_name")
    with pytest.raises(DatasetLayoutError) as error:
        make_datamodule(demo_root, extra_domains=[ExtraDomain("Sketch", root=str(sketch))]).setup(
            "fit"
        )
    message = str(error.value)
    assert f"missing ['{ours[0]}']" in message and "extra ['their_name']" in message
    assert "class_mapping" in message
    mapped = ExtraDomain("Sketch", root=str(sketch), class_mapping={"their_name": ours[0]})
    data = make_datamodule(demo_root, extra_domains=[mapped])
    assert data.class_names == ours


def test_registered_and_importable_layouts(demo_root, tmp_path) -> None:
    sketch = copy_domain(demo_root, "Clipart", tmp_path / "Sketch")
    calls = []

    @register_domain_layout("test_flat_folder")
    def read_flat(domain: ExtraDomain, class_names) -> dict[str, list[str]]:
        calls.append(domain.name)
        return {n: sorted(str(p) for p in (Path(domain.root) / n).iterdir()) for n in class_names}

    data = make_datamodule(
        demo_root,
        extra_domains=[ExtraDomain("Sketch", root=str(sketch), layout="test_flat_folder")],
    )
    assert "Sketch" in data.domain_names and calls == ["Sketch"]  # read on first use
    # `module:function` imports the reader, as a config can name one from the user's code.
    data = make_datamodule(
        demo_root,
        extra_domains=[
            ExtraDomain(
                "Sketch",
                root=str(sketch),
                layout="datamodules.data.extra_domains:read_image_folder",
            )
        ],
    )
    assert "Sketch" in data.domain_names
    with pytest.raises(ValueError, match="unknown layout 'nope'"):
        make_datamodule(
            demo_root, extra_domains=[ExtraDomain("S", root=str(sketch), layout="nope")]
        ).setup("fit")


def test_roles_held_out_and_target(demo_root, tmp_path) -> None:
    sketch = copy_domain(demo_root, "Clipart", tmp_path / "Sketch")
    held_out = make_datamodule(
        demo_root, extra_domains=[ExtraDomain("Sketch", root=str(sketch), role="held_out")]
    )
    assert held_out.trained_domains == ["Art", "Product"]
    assert held_out.held_out_domains == ["Sketch"]

    data = make_datamodule(
        demo_root, extra_domains=[ExtraDomain("Sketch", root=str(sketch), role="target")]
    )
    assert data.trained_domains == ["Art", "Product"]
    assert data.protocol == "Art+Product_to_Sketch"
    sketch_index = data.domain_names.index("Sketch")
    assert all(s.domain_index != sketch_index for s in data.split_samples["train"])
    targets = data.split_samples[TARGET_TRAIN_SPLIT]
    assert targets and {s.label for s in targets} == {UNLABELLED}
    # evaluated with its labels
    assert {s.label for s in data.split_samples["val"] if s.domain_index == sketch_index} == {
        0,
        1,
        2,
    }
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    batch, *_ = next(iter(loader))
    assert set(batch) == {"source", "target"}
    assert (batch["target"][1] == UNLABELLED).all() and (batch["source"][1] >= 0).all()


def test_target_domains_of_the_dataset_itself(demo_root) -> None:
    data = make_datamodule(demo_root, domains=["Art", "Clipart"], target_domains=["Clipart"])
    assert data.trained_domains == ["Art"]
    with pytest.raises(ValueError, match="target_domains"):
        make_datamodule(demo_root, target_domains=["Sketch"]).setup("fit")


def test_extra_domain_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="role='unlabelled'"):
        ExtraDomain("S", root="x", role="unlabelled")
    with pytest.raises(ValueError, match="give `root`"):
        ExtraDomain("S")
