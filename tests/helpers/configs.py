"""The shipped configs resolved through each entry point's `--print_config`."""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import pytest
import yaml

from experiments.cifar import main as cifar_main
from experiments.colored_mnist import main as colored_mnist_main
from experiments.domainnet import main as domainnet_main
from experiments.dtd import main as dtd_main
from experiments.officehome import main as officehome_main
from experiments.pacs import main as pacs_main
from experiments.rotated_mnist import main as rotated_mnist_main
from experiments.stylized_imagenet import main as stylized_imagenet_main
from experiments.terra_incognita import main as terra_incognita_main
from experiments.vlcs import main as vlcs_main
from tests.helpers.paths import REPO

CONFIG_DIR = REPO / "configs"
#: dataset folder of configs/ -> the entry point that reads its configs
ENTRY_POINTS = {
    "cifar10": cifar_main,
    "cifar100": cifar_main,
    "dtd": dtd_main,
    "officehome": officehome_main,
    "stylized_imagenet": stylized_imagenet_main,
    "pacs": pacs_main,
    "vlcs": vlcs_main,
    "terra_incognita": terra_incognita_main,
    "domainnet": domainnet_main,
    "rotated_mnist": rotated_mnist_main,
    "colored_mnist": colored_mnist_main,
}


@functools.cache
def resolved(dataset: str, *configs: Path) -> dict:
    """`fit --print_config` of the configs stacked in order, as a dict."""
    output = io.StringIO()
    args = ["fit", *(item for config in configs for item in ("--config", str(config)))]
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit_info:
        ENTRY_POINTS[dataset]([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(output.getvalue())
