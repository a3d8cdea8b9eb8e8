"""Data at ImageNet scale: setup time, sample memory and worker memory on a 1.33M-file tree.

Generates a tree in the Stylized-ImageNet layout (`<root>/{train,val}/<wnid>/<wnid>_<i>.JPEG`,
1,000 classes x 1,280 training + 50 validation files by default) made of hard links to a few
small JPEGs (so it costs directory entries, not image data), measures, then removes it. Each
measurement runs in a fresh Python process (`StylizedImageNetDataModule(root=...)` then
`setup("fit")`), so no process reuses another's memory or imports:

- `setup_seconds_cold`: with no file index (the scan, the index written); the file system's
  own caches are warm (the tree was just written), so a first scan on a cold disk is slower;
- `setup_seconds_warm`: again, the index now read (memory-mapped) and checked against the tree;
- `sample_storage_mb`: bytes of every split's sample arrays plus the path tables they use;
- `setup_rss_growth_mb`: how much the process's resident memory grew in the warm setup (and
  `setup_rss_growth_mb_cold` in the cold one, which holds the scanned lists while writing);
- `worker_uss_growth_mb`: the private memory (USS, from /proc/<pid>/smaps_rollup) of each of
  the 2 DataLoader workers, after the first batches and after `--samples` shuffled training
  samples; the largest growth of a worker;
- `scans_per_machine`: 2 processes started at once with no index (as DDP ranks are), each
  building the DataModule and calling `setup`, rank 0 also `prepare_data`: scans made per
  scanned folder (each index file records how many scans it was written from).

    python -m benchmarks.data_scale                      # the real 1.33M-file tree
    python -m benchmarks.data_scale --classes 50 --samples 20000 --name data_scale_quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import machine_description, write_result

NAME = "data_scale"
REPO = Path(__file__).resolve().parent.parent
LINKS_PER_SOURCE = 60_000


def generate_tree(root: Path, classes: int, train: int, val: int) -> int:
    """The SIN layout as hard links to a few small JPEGs; returns the number of files."""
    rng = np.random.default_rng(0)
    # ext4 allows 65,000 links to one file: enough sources for every file to have one.
    sources = max(4, (classes * (train + val)) // LINKS_PER_SOURCE + 1)
    originals = []
    for index in range(sources):
        path = root / f".source-{index}.JPEG"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)
        originals.append(str(path))
    count = 0
    for split, per_class in (("train", train), ("val", val)):
        for label in range(classes):
            wnid = f"n{label:08d}"
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for index in range(per_class):
                os.link(originals[index % sources], folder / f"{wnid}_{index}.JPEG")
            count += per_class
    return count


def uss_mb(pid: int) -> float:
    """Private (unique) memory of a process: Private_Clean + Private_Dirty of smaps_rollup."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(pid: int, expected: int) -> list[int]:
    """The DataLoader workers: the children of `pid` that run Python (the same executable)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                same = os.readlink(entry / "exe") == os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if int(fields[1]) == pid and same:
                children.append(int(entry.name))
    if len(children) != expected:
        raise RuntimeError(f"found {len(children)} worker processes, expected {expected}")
    return sorted(children)


# ----- what the measuring processes run -------------------------------------------------------
def _datamodule(root: str, image_size: int, workers: int):
    from datamodules.stylized_imagenet import StylizedImageNetDataModule

    return StylizedImageNetDataModule(
        root=root,
        image_size=image_size,
        batch_size=256,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=False,
    )


def child_setup(root: str, image_size: int) -> dict:
    """Construct and set up; time, storage and resident memory."""
    from datamodules.data.samples import SampleArray
    from datamodules.stylized_imagenet import StylizedImageNetDataModule  # noqa: F401 (imports)

    # Timed from construction: the imports (torch, Lightning) are not the data's cost.
    rss_before = rss_mb(os.getpid())
    start = time.perf_counter()
    datamodule = _datamodule(root, image_size, workers=0)
    datamodule.setup("fit")
    seconds = time.perf_counter() - start
    arrays, tables = 0, {}
    for samples in datamodule.split_samples.values():
        assert isinstance(samples, SampleArray)
        arrays += sum(
            a.nbytes
            for a in (samples.table_of, samples.rows, samples.labels, samples.domain_indices)
        )
        tables.update({id(t): t.nbytes for t in samples.tables})
    counts = {split: len(s) for split, s in datamodule.split_samples.items()}
    return {
        "seconds": seconds,
        "sample_storage_mb": (arrays + sum(tables.values())) / 2**20,
        "rss_growth_mb": rss_mb(os.getpid()) - rss_before,
        "counts": counts,
    }


def child_iterate(root: str, image_size: int, samples: int, workers: int) -> dict:
    """Iterate `samples` shuffled training samples with `workers` workers; their USS."""
    import torch

    torch.manual_seed(0)
    datamodule = _datamodule(root, image_size, workers)
    datamodule.setup("fit")
    # Persistent workers: the same two processes through every epoch, as in training.
    datamodule.persistent_workers = True
    loader = datamodule.train_dataloader()
    seen, first, checkpoints = 0, None, []
    start = time.perf_counter()
    while seen < samples:
        for images, _, _ in loader:
            seen += images.shape[0]
            if first is None and seen >= min(10 * loader.batch_size, samples // 4):
                first = {pid: uss_mb(pid) for pid in worker_pids(os.getpid(), workers)}
                first_seen = seen
            if first is not None and seen // 50_000 != (seen - images.shape[0]) // 50_000:
                checkpoints.append([seen, [uss_mb(pid) for pid in first]])
            if seen >= samples:
                break
    last = {pid: uss_mb(pid) for pid in first}
    return {
        "samples": seen,
        "seconds": time.perf_counter() - start,
        "uss_first_mb": list(first.values()),
        "uss_first_after_samples": first_seen,
        "uss_last_mb": list(last.values()),
        "uss_checkpoints": checkpoints,
        "growth_mb": max(last[p] - first[p] for p in first),
    }


def child_rank(root: str, image_size: int, rank: int) -> dict:
    """One of two processes started at once: rank 0 prepares, both set up."""
    datamodule = _datamodule(root, image_size, workers=0)
    if rank == 0:
        datamodule.prepare_data()
    datamodule.setup("fit")
    return {"train": len(datamodule.split_samples["train"])}


def recorded_scans_in(index_dir: Path) -> int:
    """The scans recorded by the index files of `index_dir`, all folders together."""
    from datamodules.data.index import recorded_scans

    return sum(recorded_scans(path) for path in index_dir.glob("*.index"))


def _run_child(args: list[str], env: dict, background: bool = False):
    command = [sys.executable, "-m", "benchmarks.data_scale", "--child", *args]
    if background:
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    finished = subprocess.run(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(finished.stdout.strip().splitlines()[-1])


# ----- the benchmark ----------------------------------------------------------------------------
def run(
    classes: int = 1000,
    train_per_class: int = 1280,
    val_per_class: int = 50,
    samples: int = 200_000,
    workers: int = 2,
    image_size: int = 32,
    tmp_dir: str | None = None,
) -> dict:
    """Generate the tree, measure in child processes, remove the tree; the result dictionary."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stylebench-data-scale-", dir=tmp_dir) as folder:
        folder = Path(folder)
        root = folder / "sin"
        root.mkdir()
        start = time.perf_counter()
        files = generate_tree(root, classes, train_per_class, val_per_class)
        generate_seconds = time.perf_counter() - start
        print(f"generated {files} files in {generate_seconds:.0f} s", flush=True)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
            "STYLEBENCH_DATA_DIR": str(folder / "cache"),
            # The benchmark's own index folder, whatever the caller's environment says.
            "STYLEBENCH_INDEX_DIR": str(folder / "cache" / "index"),
        }
        common = ["--root", str(root), "--image-size", str(image_size)]
        cold = _run_child(["setup", *common], env)
        print(f"cold setup: {cold['seconds']:.1f} s", flush=True)
        warm = _run_child(["setup", *common], env)
        print(f"warm setup: {warm['seconds']:.1f} s", flush=True)
        scans_single = recorded_scans_in(folder / "cache" / "index")
        iterate = _run_child(
            ["iterate", *common, "--samples", str(samples), "--workers", str(workers)], env
        )
        print(f"iterated {iterate['samples']}: growth {iterate['growth_mb']:.1f} MB", flush=True)
        # Two "ranks" started at once on a machine with no index yet.
        shutil.rmtree(folder / "cache")
        ranks = [
            _run_child(["rank", *common, "--rank", str(rank)], env, background=True)
            for rank in (0, 1)
        ]
        for process in ranks:
            process.communicate()
            if process.returncode:
                raise RuntimeError(f"a rank process failed ({process.returncode})")
        # Both processes read train/ and val/: two folders, so one scan per machine is 2 scans.
        scans_per_machine = recorded_scans_in(folder / "cache" / "index") / 2
    row = {
        "files": files,
        "setup_seconds_cold": cold["seconds"],
        "setup_seconds_warm": warm["seconds"],
        "sample_storage_mb": warm["sample_storage_mb"],
        "setup_rss_growth_mb": warm["rss_growth_mb"],
        "setup_rss_growth_mb_cold": cold["rss_growth_mb"],
        "worker_uss_growth_mb": iterate["growth_mb"],
        "iterated_samples": iterate["samples"],
        "scans_per_machine": scans_per_machine,
    }
    return {
        "name": NAME,
        "machine": {
            **machine_description("cpu"),
            "load_average_1min_before": load_before,
        },
        "settings": {
            "classes": classes,
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "samples": samples,
            "workers": workers,
            "image_size": image_size,
            "tree_generation_seconds": round(generate_seconds, 1),
        },
        **{key: value for key, value in row.items() if key != "files"},
        "files": files,
        "scans_single_process_runs": scans_single,
        "split_counts": warm["counts"],
        "worker_uss": iterate,
        "rows": [row],
        "targets": {
            "setup_seconds_warm_le_5": warm["seconds"] <= 5,
            "sample_storage_mb_le_150": warm["sample_storage_mb"] <= 150,
            "worker_uss_growth_mb_le_50": iterate["growth_mb"] <= 50,
            "scans_per_machine_eq_1": scans_per_machine == 1,
        },
    }


COLUMNS = (
    "files",
    "setup_seconds_cold",
    "setup_seconds_warm",
    "sample_storage_mb",
    "setup_rss_growth_mb",
    "setup_rss_growth_mb_cold",
    "worker_uss_growth_mb",
    "iterated_samples",
    "scans_per_machine",
)

NOTES = """
Each figure from a fresh process: `StylizedImageNetDataModule(root=...)` + `setup("fit")` with
no file index (cold: the scan; the tree was just written, so the file system's caches are warm)
and with it (warm: the index memory-mapped and checked with one `stat` per class folder). Sample
storage: the split arrays plus the path tables (paths as one UTF-8 buffer + offsets). Worker
USS: Private_Clean + Private_Dirty of each of the DataLoader workers (/proc/<pid>/smaps_rollup)
after 10 batches (a quarter of the samples if fewer) and after the iterated samples (shuffled,
batch 256, crops at `image_size`); the largest growth of a worker. Scans per machine: 2
processes started at once with no index (rank 0 calls `prepare_data`, both `setup`), scans
counted by the index files (each records the scans it was written from). The machine is shared
with other jobs: see the load averages; timings are under that load.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--train-per-class", type=int, default=1280)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200_000, help="samples iterated")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--image-size", type=int, default=32, help="training crop side")
    parser.add_argument("--tmp-dir", default=None, help="where the tree is generated")
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None) -> dict:
    """Run with parsed options and write the result files."""
    result = run(
        args.classes,
        args.train_per_class,
        args.val_per_class,
        args.samples,
        args.workers,
        args.image_size,
        args.tmp_dir,
    )
    write_result(args.name, result, COLUMNS, NOTES, results_dir)
    return result


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["setup", "iterate", "rank"])
    parser.add_argument("--root", required=True)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "setup":
        result = child_setup(args.root, args.image_size)
    elif args.what == "iterate":
        result = child_iterate(args.root, args.image_size, args.samples, args.workers)
    else:
        result = child_rank(args.root, args.image_size, args.rank)
    print(json.dumps(result), flush=True)


def main(argv=None) -> dict | None:
    """Command line: `python -m benchmarks.data_scale [--classes ...]`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
