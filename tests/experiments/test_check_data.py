"""`python -m experiments.check_data --config <file>`: report, exit status, config overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.check_data import main
from tests.helpers.trees import make_officehome_tree

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, root: Path) -> Path:
    """A training config (trainer and model sections included), as users pass them."""
    config = {
        "trainer": {"max_epochs": 1},
        "model": {"class_path": "lightning_modules.classifier.MultiDomainClassifier"},
        "data": {
            "class_path": "datamodules.officehome.OfficeHomeDataModule",
            "init_args": {"root": str(root), "image_size": 16, "num_workers": 0},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "officehome"
    make_officehome_tree(root, {"Art": 5, "Clipart": 5, "Product": 5, "Real World": 5}, ("A", "B"))
    return root


def test_clean_data_exits_zero(tmp_path: Path, root: Path, capsys) -> None:
    assert main(["--config", str(write_config(tmp_path, root))]) == 0
    assert "checked 40 images" in capsys.readouterr().out


def test_errors_are_listed_and_exit_one(tmp_path: Path, root: Path, capsys) -> None:
    (root / "Product" / "B" / "00002.jpg").write_bytes(b"")
    assert main(["--config", str(write_config(tmp_path, root))]) == 1
    out = capsys.readouterr().out
    assert f"ERROR [zero-byte] {root / 'Product' / 'B' / '00002.jpg'}:" in out
    assert "1 errors" in out


def test_overrides_use_the_training_cli_syntax(tmp_path: Path, root: Path, capsys) -> None:
    # Only the two chosen domains are scanned.
    config = str(write_config(tmp_path, root))
    assert main(["--config", config, "--data.init_args.domains", "[Art, Clipart]"]) == 0
    assert "checked 20 images" in capsys.readouterr().out


def test_layout_errors_are_rows_and_config_errors_exit_two(
    tmp_path: Path, root: Path, capsys
) -> None:
    (root / "Clipart" / "C").mkdir()  # a class folder only one domain has
    assert main(["--config", str(write_config(tmp_path, root))]) == 1
    out = capsys.readouterr().out
    assert f"ERROR [class-mismatch] {root / 'Clipart'}:" in out
    assert "missing [], extra ['C']" in out
    # An unknown domain (a setting, not the data) names the valid choices.
    config = str(write_config(tmp_path, root))
    assert main(["--config", config, "--data.init_args.domains", "[Sketch]"]) == 2
    assert "valid choices: ['Art', 'Clipart', 'Product', 'Real World']" in capsys.readouterr().err


def test_shipped_configs_stack_and_only_the_data_is_built(root: Path, capsys) -> None:
    # leave_out_art asks for ImageNet weights, which are not here: the model is never built.
    configs = REPO / "configs"
    args = [
        "--config",
        str(configs / "officehome" / "leave_out_art.yaml"),
        "--config",
        str(configs / "modules" / "se.yaml"),
        "--data.init_args.root",
        str(root),
        "--data.init_args.num_workers",
        "0",
    ]
    assert main(args) == 0
    assert "checked 40 images" in capsys.readouterr().out


def test_no_decode_and_workers_are_the_checks_own_options(
    tmp_path: Path, root: Path, capsys
) -> None:
    (root / "Product" / "B" / "00002.jpg").write_text("not an image")
    config = str(write_config(tmp_path, root))
    # without decoding, a file that is no image goes unnoticed; layout and hashes are checked
    assert main(["--config", config, "--no-decode", "--workers", "1"]) == 0
    assert "checked 0 images" in capsys.readouterr().out
    assert main(["--config", config, "--workers", "1"]) == 1


def test_unknown_options_exit_two_with_one_line(tmp_path: Path, root: Path, capsys) -> None:
    config = str(write_config(tmp_path, root))
    assert main(["--config", config, "--data.init_args.no_such_option", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: cannot build the DataModule from {config}:")
    assert "no_such_option" in err


@pytest.mark.slow
def test_command_line_entry_point(tmp_path: Path, root: Path) -> None:
    (root / "Art" / "A" / "00001.jpg").write_text("not an image")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.check_data",
            "--config",
            str(write_config(tmp_path, root)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "ERROR [unreadable]" in result.stdout
