"""What a command imports: time and memory of the imports of a `fit` process (measured only).

Two fresh Python processes, each under `python -X importtime`:

- `import experiments.officehome`: what `python -m experiments.officehome` loads before it parses
  its arguments; wall time of the import and the process's max RSS right after it;
- a tiny demo `fit` (one training batch, one epoch) run as `python -m experiments.officehome
  fit` runs it: every module the command loads, including those imported while it runs
  (logger, callbacks, data generation), and the process's max RSS at its end.

From each import tree (`-X importtime` prints every import with its own and cumulative time),
each top-level package's import time is the cumulative time of the imports that enter it from
outside, and the project module (`datamodules`, `lightning_modules`, `experiments`) through which
it was first reached is named, so the heavy imports can be traced to an import site.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import DEMO_CONFIG, demo_environment, machine_description, write_result

NAME = "imports"
REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("datamodules", "lightning_modules", "experiments", "benchmarks")
# Packages listed whatever their time (the suspects), beside those over the threshold.
WATCHED = (
    "ray", "litdata", "scipy", "mlflow", "matplotlib", "pandas", "sklearn", "timm",
    "albumentations", "cv2", "torchvision", "sqlalchemy", "alembic", "pyarrow", "boto3",
    "botocore", "flask", "pydantic", "jsonargparse", "torchmetrics", "pytorch_lightning",
)  # fmt: skip
THRESHOLD_MS = 50.0
# Prints the process's max RSS (kB on Linux) to stderr when it ends, however it ends.
RSS_AT_EXIT = (
    "import atexit, resource, sys; atexit.register(lambda: print('MAX_RSS_KB', "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))"
)
# Records, for each top-level package's first import, the innermost project source line on the
# stack (an import hook: `-X importtime` cannot say who imports a module inside a function) and
# prints them to stderr at exit. Source text, not an import: importing `benchmarks` would load
# torch before the measured imports.
IMPORT_SITES = """
import atexit, json, os, sys, traceback
_sites, _roots = {}, tuple(os.path.join(os.getcwd(), p) + os.sep for p in PROJECT_PACKAGES)
class _SiteRecorder:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in _sites:
            stack = traceback.extract_stack()[:-1]
            # importlib.util.find_spec only asks whether a package exists (Lightning's
            # RequirementCache does for many): not an import.
            probe = ("<frozen importlib.util>", os.path.join("importlib", "util.py"))
            if any(f.name == "find_spec" and f.filename.endswith(probe) for f in stack):
                return None
            frames = [f for f in stack if f.filename.startswith(_roots)]
            _sites[top] = (
                f"{os.path.relpath(frames[-1].filename)}:{frames[-1].lineno}" if frames else None
            )
        return None
sys.meta_path.insert(0, _SiteRecorder())
atexit.register(lambda: print("IMPORT_SITES", json.dumps(_sites), file=sys.stderr))
""".replace("PROJECT_PACKAGES", repr(PROJECT_PACKAGES))
IMPORT_ONLY = (
    "import time; start = time.perf_counter(); import experiments.officehome; "
    "print('IMPORT_S', time.perf_counter() - start, file=sys.stderr)"
)
RUN_FIT = "import runpy; sys.argv = ['experiments.officehome', *sys.argv[1:]]; " + (
    "runpy.run_module('experiments.officehome', run_name='__main__')"
)


@dataclass
class ImportNode:
    """One line of `-X importtime`: a module, its cumulative microseconds, its importer."""

    name: str
    cumulative_us: int
    parent: ImportNode | None = None
    children: list[ImportNode] = field(default_factory=list)

    @property
    def package(self) -> str:
        return self.name.split(".")[0]


def parse_importtime(text: str) -> list[ImportNode]:
    """The import tree's nodes in the order printed (children before their importer)."""
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
    nodes: list[ImportNode] = []
    pending: list[tuple[int, ImportNode]] = []
    for line in text.splitlines():
        match = pattern.match(line)
        if match is None:
            continue
        depth = len(match[3])
        node = ImportNode(match[4], int(match[2]))
        # Lines deeper than this one, printed just before it, are the modules it imported.
        while pending and pending[-1][0] > depth:
            child = pending.pop()[1]
            child.parent = node
            node.children.append(child)
        pending.append((depth, node))
        nodes.append(node)
    return nodes


def import_sites(stderr: str) -> dict[str, str | None]:
    """Top-level package -> the project source line whose import first loaded it."""
    match = re.search(r"^IMPORT_SITES (.*)$", stderr, re.MULTILINE)
    return json.loads(match[1]) if match else {}


def total_seconds(nodes: list[ImportNode]) -> float:
    """Time of all imports: the cumulative times of the tree's roots."""
    return sum(node.cumulative_us for node in nodes if node.parent is None) / 1e6


def package_imports(nodes: list[ImportNode], sites: dict | None = None) -> dict[str, dict]:
    """Package -> {import_ms, imported_by, project_site}: time spent entering it from outside
    (nested packages' time is counted in each enclosing one too)."""
    packages: dict[str, dict] = {}
    for node in nodes:
        if node.parent is not None and node.parent.package == node.package:
            continue  # inside the package: already counted in the entry's cumulative time
        entry = packages.setdefault(
            node.package,
            {
                "import_ms": 0.0,
                # None: imported inside a function, at run time.
                "imported_by": node.parent.name if node.parent else None,
                "project_site": (sites or {}).get(node.package) or _project_importer(node),
            },
        )
        entry["import_ms"] += node.cumulative_us / 1000
    return packages


def _project_importer(node: ImportNode) -> str | None:
    """The nearest project module above `node` in the tree (the import site to change)."""
    ancestor = node.parent
    while ancestor is not None and ancestor.package not in PROJECT_PACKAGES:
        ancestor = ancestor.parent
    return ancestor.name if ancestor else None


def run_process(code: str, args: list[str], environment: dict) -> tuple[str, int]:
    """Run `python -X importtime -c code args`; return its stderr and max RSS (kB)."""
    source = f"import sys; {RSS_AT_EXIT}\n{IMPORT_SITES}\n{code}"
    command = [sys.executable, "-X", "importtime", "-c", source]
    done = subprocess.run(
        [*command, *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=900
    )
    rss = re.search(r"MAX_RSS_KB (\d+)", done.stderr)
    if done.returncode != 0 or rss is None:
        raise RuntimeError(f"{code!r} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stderr, int(rss[1])


def heavy(packages: dict[str, dict]) -> list[dict]:
    """The packages over `THRESHOLD_MS` or in `WATCHED`, slowest first."""
    rows = [
        {"package": name, **entry}
        for name, entry in packages.items()
        if entry["import_ms"] >= THRESHOLD_MS or name in WATCHED
    ]
    return sorted(rows, key=lambda row: row["import_ms"], reverse=True)


def run(fit_args: list[str] | None = None) -> dict:
    """Measure both processes; return the result dictionary."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    text, rss = run_process(IMPORT_ONLY, [], environment)
    import_s = float(re.search(r"IMPORT_S ([\d.e-]+)", text)[1])
    import_packages = package_imports(parse_importtime(text), import_sites(text))
    with demo_environment(DEMO_CONFIG) as demo_args:
        environment = {**environment, **{k: os.environ[k] for k in ("STYLEBENCH_DATA_DIR",)}}
        tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]
        fit_text, fit_rss = run_process(
            RUN_FIT, ["fit", *demo_args, *tiny, *(fit_args or [])], environment
        )
    fit_nodes = parse_importtime(fit_text)
    fit_packages = package_imports(fit_nodes, import_sites(fit_text))
    rows = [
        {
            "process": "import experiments.officehome",
            "seconds": import_s,
            "max_rss_mb": rss / 1024,
            "modules": len(parse_importtime(text)),
        },
        {
            "process": "fit (demo, 1 batch, 1 epoch)",
            "seconds": total_seconds(fit_nodes),
            "max_rss_mb": fit_rss / 1024,
            "modules": len(fit_nodes),
        },
    ]
    return {
        "name": NAME,
        "machine": machine_description("cpu"),
        "settings": {"fit_args": " ".join(fit_args or []), "threshold_ms": THRESHOLD_MS},
        "rows": rows,
        "heavy_imports_of_import": heavy(import_packages),
        "heavy_imports_of_fit": heavy(fit_packages),
    }


COLUMNS = ("process", "seconds", "max_rss_mb", "modules")

NOTES = """
`seconds`: the import's wall time (first row); for the fit, the time of all its imports
(`-X importtime`'s cumulative times of the tree's roots; it adds some overhead itself).
`max_rss_mb`: the process's peak resident memory (after the import; at the end of the fit).
`heavy_imports_*` in the JSON: packages over 50 ms or on the watch list (a package's time
includes the packages it imports), with the module that imported them (None: inside a
function) and the project source line whose import first loaded them.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None, extra_args=None) -> dict:
    """Run with parsed options and write the result files."""
    result = run(extra_args)
    lines = [
        f"- {row['package']}: {row['import_ms']:.0f} ms, imported by {row['imported_by']} "
        f"(from {row['project_site']})"
        for row in result["heavy_imports_of_fit"]
    ]
    notes = NOTES + "\nHeavy imports of the fit:\n\n" + "\n".join(lines) + "\n"
    write_result(args.name, result, COLUMNS, notes, results_dir)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.imports [-- extra fit args]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("fit_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return run_from_args(args, extra_args=[a for a in args.fit_args if a != "--"])


if __name__ == "__main__":
    main()
