"""What a command refuses before its MLflow run exists, with one message naming the setting or
the file and line: an output folder it cannot write, a `--ckpt_path` file that does not exist,
list and label files (every bad line at once, missing files included), symlink loops."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from datamodules.data.preflight import require_valid_inputs
from datamodules.data.problems import DataProblemsError
from datamodules.dtd import DTDDemoDataModule
from experiments.errors import run_main
from experiments.officehome import main
from lightning_modules.preflight import check_ckpt_path, check_writable
from tests.helpers.cli import tiny_demo_args


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: main(args))
    return stopped.value.code


def no_runs(uri: str) -> bool:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.fixture
def read_only(tmp_path: Path):
    """A folder nothing can be created in (immutable as root, mode 555 otherwise)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr: no read-only folder")
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        made, undo = subprocess.CompletedProcess([], 0), ["chmod", "755", str(folder)]
    try:
        (folder / "probe").mkdir()
    except OSError:
        pass
    else:
        pytest.skip("cannot make a read-only folder here")
    assert made.returncode == 0
    yield folder
    subprocess.run(undo, check=False)


def test_an_unwritable_output_folder_is_refused_before_training(
    tmp_path: Path, read_only: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: found after a whole epoch, at the first checkpoint, as
    # `[Errno 1] Operation not permitted: '<dir>/1'`, naming no setting.
    args = tiny_demo_args(tmp_path, f"--trainer.default_root_dir={read_only}", epochs=1)
    assert run(["fit", *args]) == 1
    err = capsys.readouterr().err
    line = next(text for text in err.splitlines() if text.startswith("error: "))
    assert line.startswith(f"error: trainer.default_root_dir={str(read_only)!r} cannot be written")
    assert "set trainer.default_root_dir to a folder this user can write" in line
    assert no_runs(mlflow_uri)
    with pytest.raises(ValueError, match=r"checkpoint\.dirpath='.*/read-only/ckpt' cannot be"):
        check_writable(read_only / "ckpt", "checkpoint.dirpath")


def test_a_missing_checkpoint_file_is_refused_before_the_run(
    tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: `validate --ckpt_path <typo>` left a FAILED run behind.
    args = tiny_demo_args(tmp_path, "--ckpt_path=nosuch.ckpt", epochs=1)
    assert run(["validate", *args]) == 1
    err = capsys.readouterr().err
    assert "error: --ckpt_path nosuch.ckpt: no such checkpoint file" in err
    assert no_runs(mlflow_uri)
    for keyword in (None, "best", "last"):
        check_ckpt_path(keyword)


def test_an_extra_domain_list_is_read_whole_before_training(
    tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a missing listed file stopped the run when its batch loaded, naming no line.
    cache = tmp_path.parent / "demo-cache"
    run(["fit", *tiny_demo_args(tmp_path, "--print_config", epochs=1)])  # makes no data
    capsys.readouterr()
    from datamodules.demo import ensure_officehome_demo

    root = Path(ensure_officehome_demo(str(cache), num_classes=4, images_per_class=30))
    images = sorted(root.glob("Art/*/*.*"))
    list_file = tmp_path / "sketch.txt"
    list_file.write_text(
        f"{images[0].relative_to(root)} 0\n"
        "Art/A/missing-1.jpg 0\n"
        f"{images[1].relative_to(root)} 1\n"
        "Art/B/missing-2.jpg 1\n"
        "../../etc/passwd 0\n"
    )
    domain = f"[{{name: Sketch, image_list: {list_file}, image_root: {root}, role: held_out}}]"
    args = tiny_demo_args(tmp_path, f"--data.init_args.extra_domains={domain}", epochs=1)
    assert run(["fit", *args]) == 1
    err = capsys.readouterr().err
    assert f"  ERROR [missing-file] {list_file}:2: 'Art/A/missing-1.jpg' does not exist" in err
    assert f"  ERROR [missing-file] {list_file}:4: 'Art/B/missing-2.jpg' does not exist" in err
    assert f"  ERROR [escaping-path] {list_file}:5:" in err
    assert no_runs(mlflow_uri)


@pytest.fixture
def dtd(tmp_path: Path) -> DTDDemoDataModule:
    data = DTDDemoDataModule(
        cache_dir=str(tmp_path / "cache"), demo_classes=3, images_per_class=6, image_size=16
    )
    shutil.copytree(data.root, tmp_path / "dtd")
    return DTDDemoDataModule(root=str(tmp_path / "dtd"), demo_classes=3, image_size=16)


def test_every_bad_line_of_a_dtd_label_file_is_reported(dtd: DTDDemoDataModule) -> None:
    # Before: the first bad line only, at fit time.
    label_file = Path(dtd.root) / "labels" / "train1.txt"
    lines = label_file.read_text().splitlines()
    bad = ["nope/x.jpg", "/etc/passwd", lines[0], "just-a-name", f"{lines[0].split('/')[0]}/0.jpg"]
    label_file.write_text("\n".join([*lines, *bad]) + "\n")
    with pytest.raises(DataProblemsError) as raised:
        require_valid_inputs(dtd)
    kinds = sorted((f.line, f.kind) for f in raised.value.findings)
    first = len(lines) + 1
    assert kinds == [
        (first, "unknown-class"),
        (first + 1, "absolute-path"),
        (first + 2, "duplicate"),
        (first + 3, "malformed-list"),
        (first + 4, "missing-file"),
    ]
    assert all(f.path == str(label_file) for f in raised.value.findings)
    assert f"{label_file}, line {first}: 'nope/x.jpg': unknown class" in str(raised.value)
    assert "(and 4 more bad lines)" in str(raised.value)


def test_symlink_loops_in_class_folders_are_found_before_training(dtd: DTDDemoDataModule) -> None:
    # Before: a looping folder was passed over; a looping image failed when its batch loaded.
    class_dir = next(p for p in (Path(dtd.root) / "images").iterdir() if p.is_dir())
    os.symlink("loop-dir", class_dir / "loop-dir")
    with pytest.raises(DataProblemsError) as raised:
        require_valid_inputs(dtd)
    (finding,) = raised.value.findings
    assert (finding.kind, finding.path) == ("symlink-loop", str(class_dir / "loop-dir"))
    os.symlink("loop.jpg", class_dir / "loop.jpg")
    dtd.rescan()
    with pytest.raises(DataProblemsError) as raised:
        require_valid_inputs(dtd)
    assert len(raised.value.findings) == 2
    dtd.on_bad_image = "skip"  # the run skips (and counts) what it cannot read
    require_valid_inputs(dtd)
