"""The dataset entry points built by `experiments.errors.dataset_entry_point`: each reads a
config of its own dataset and refuses another dataset's DataModule (parsing only)."""

from __future__ import annotations

import contextlib
import io

import pytest

from datamodules.dtd import DTDDataModule
from experiments import cifar, dtd, officehome, stylized_imagenet
from experiments.errors import dataset_entry_point

OFFICEHOME_DEMO = "configs/officehome/demo.yaml"


def print_config(main, config: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config, "--print_config"])
    assert stop.value.code in (0, None)
    return out.getvalue()


def test_the_entry_point_reads_its_datasets_config():
    printed = print_config(officehome.main, OFFICEHOME_DEMO)
    assert "class_path: datamodules.officehome.OfficeHomeDemoDataModule" in printed


@pytest.mark.parametrize(
    ("main", "base"),
    [
        (dtd.main, "DTDDataModule"),
        (cifar.main, "CIFARDataModule"),
        (stylized_imagenet.main, "StylizedImageNetDataModule"),
    ],
)
def test_another_datasets_datamodule_is_refused(main, base, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", OFFICEHOME_DEMO, "--print_config"])
    assert stop.value.code == 2  # jsonargparse's usage error
    assert f"does not correspond to a subclass of {base}" in capsys.readouterr().err


def test_each_call_builds_a_main_of_its_own_class():
    main = dataset_entry_point(DTDDataModule)
    assert "DTDDataModule" in main.__doc__ and main is not dtd.main
    printed = print_config(main, "configs/dtd/demo.yaml")
    assert "class_path: datamodules.dtd.DTDDemoDataModule" in printed
