"""Sweeps: `python -m experiments.sweep run|status|collect SWEEP.yaml [--address ADDRESS]`.

- `run`: create the MLflow store (once, under its lock), the sweep's experiment and parent
  run; run every trial not finished yet under Ray Tune (local Ray sized to this machine, or
  the cluster at `--address` / $RAY_ADDRESS), resuming interrupted ones from their last
  checkpoint into their own MLflow run; then `collect`. While trials run, every 30 s
  (`--progress-seconds`) it prints each running trial's epoch and latest `val/acc_mean`, the
  elapsed time and an estimate of the time left.
- `status`: done / running / interrupted / failed / pending counts (`-v`: one line per trial).
- `collect`: model selection, statistics and the report (printed, written to
  `<output_dir>/report/`, logged on the parent run, best checkpoints tagged on it); its rows are
  the modules, or module + method (`srm+coral`) in a sweep with methods (in the grid or set by
  `cases`), on each set of case labels (`pair: Ar2Cl`), each paired with the baseline (`none`,
  with `erm`) of the same case labels, and module x method tables where methods vary.

Sweep files: configs/sweeps/*.yaml (format: experiments/sweeps/spec.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import filelock

from experiments.sweeps.progress import PRINT_INTERVAL_S
from experiments.sweeps.report import write_report
from experiments.sweeps.runs import (
    load_records,
    open_existing,
    open_sweep,
    resolve_tracking_uri,
    state_counts,
)
from experiments.sweeps.selection import Selection, best_checkpoints, case_text, select_all
from experiments.sweeps.spec import SweepSpec, SweepSpecError, load_spec
from experiments.sweeps.trials import TRIAL_STATES
from lightning_modules.names import metric_safe_name

REPORT_ARTIFACTS = "report"


def run(spec: SweepSpec, args: argparse.Namespace) -> int:
    tracking_uri = resolve_tracking_uri(spec, args.tracking_uri)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(spec.output_dir / "sweep.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise SystemExit(
            f"another `sweep run` of {spec.name!r} holds {lock.lock_file}; wait for it, "
            "or follow it with `python -m experiments.sweep status`"
        ) from None
    started = time.perf_counter()
    try:
        client, experiment_id, parent = open_sweep(spec, tracking_uri)
        parent_id = parent.info.run_id
        client.update_run(parent_id, status="RUNNING")
        records = load_records(client, spec, experiment_id, parent_id, with_history=False)
        done = {r.hash for r in records if r.state == "done"}
        pending = [t for t in spec.trials() if t.hash not in done]
        print(
            f"sweep {spec.name}: {len(records)} trials, {len(done)} done, "
            f"{len(pending)} to run; MLflow {tracking_uri}, experiment {spec.experiment!r}, "
            f"parent run {parent_id}"
        )
        errors = 0
        if pending:
            from experiments.sweeps.engine import run_with_tune

            common = {
                "spec_path": str(spec.path.resolve()),
                "tracking_uri": tracking_uri,
                "output_dir": str(spec.output_dir),
                "experiment_id": experiment_id,
                "parent_run_id": parent_id,
            }
            result = run_with_tune(
                spec,
                pending,
                common,
                args.address,
                args.num_cpus,
                args.num_gpus,
                args.progress_seconds,
            )
            errors = result.errors
            print(
                f"Ray started in {result.startup_seconds:.1f} s; {result.submitted} trials in "
                f"{result.seconds:.0f} s, {errors} failed"
            )
            client.log_metric(parent_id, "sweep/ray_startup_seconds", result.startup_seconds)
        counts = status(spec, args, quiet=True)
        collect(spec, args)
        all_done = counts.get("done", 0) == len(records)
        client.log_metric(parent_id, "sweep/wall_seconds", time.perf_counter() - started)
        client.set_terminated(parent_id, "FINISHED" if all_done else "FAILED")
        return 0 if all_done else 1
    finally:
        lock.release()


def status(spec: SweepSpec, args: argparse.Namespace, quiet: bool = False) -> dict[str, int]:
    tracking_uri = resolve_tracking_uri(spec, args.tracking_uri)
    client, experiment_id, parent = open_existing(spec, tracking_uri)
    records = load_records(client, spec, experiment_id, parent.info.run_id, with_history=False)
    counts = state_counts(records)
    print(
        f"sweep {spec.name}: "
        + ", ".join(f"{counts.get(state, 0)} {state}" for state in TRIAL_STATES)
        + f" (of {len(records)})"
    )
    if getattr(args, "verbose", False) and not quiet:
        for r in records:
            cases = f" {case_text(r.cases)}" if r.cases else ""
            held = f" held out {r.held_out_label}" if r.held_out else ""
            print(
                f"  {r.hash}  {r.state:<11} {r.module}{cases} seed {r.seed} draw {r.draw}{held}  "
                f"{r.run_id or '-'}"
            )
    return counts


def best_tag_key(pick: Selection) -> str:
    """`<method>.<module>[.<case label>...][.<held-out>]` of a pick's tags on the parent run;
    MLflow tag keys take letters, digits, `_-./: ` only (`srm+coral` -> `srm_coral`, held out
    `Art+Clipart` -> `Art_Clipart`)."""
    labels = [label for _, label in pick.cases]
    parts = [pick.method, pick.module, *labels, pick.held_out]
    return ".".join(metric_safe_name(part) for part in parts if part)


def collect(spec: SweepSpec, args: argparse.Namespace) -> str:
    tracking_uri = resolve_tracking_uri(spec, args.tracking_uri)
    client, experiment_id, parent = open_existing(spec, tracking_uri)
    parent_id = parent.info.run_id
    records = load_records(client, spec, experiment_id, parent_id)
    finished = [r for r in records if r.state == "done"]
    if not finished:
        raise SystemExit(f"sweep {spec.name!r}: no finished trial yet (see `status`)")
    selections = select_all(records)
    counts = state_counts(records)
    note = (
        f"{len(finished)} of {len(records)} trials finished"
        + "".join(f", {counts[s]} {s}" for s in TRIAL_STATES if s != "done" and counts.get(s))
        + f"; MLflow experiment `{spec.experiment}`, parent run `{parent_id}`. Accuracy in %."
    )
    output_dir = Path(spec.output_dir) / "report"
    # The sweep's modules x methods, then rows only the records name (methods set by cases).
    order = list(dict.fromkeys([*spec.variants(), *(r.module for r in records)]))
    report, paths = write_report(
        records,
        selections,
        output_dir,
        spec.baseline_variant,
        order,
        f"Sweep {spec.name}",
        note,
        interval=args.interval,
    )
    print(report)
    for path in paths.values():
        client.log_artifact(parent_id, str(path), REPORT_ARTIFACTS)
    client.set_tag(parent_id, "mlflow.note.content", report)
    for pick in best_checkpoints(selections):
        key = best_tag_key(pick)
        client.set_tag(parent_id, f"best_checkpoint.{key}", pick.checkpoint or "(not kept)")
        client.set_tag(parent_id, f"best_step.{key}", str(pick.step))
        client.set_tag(parent_id, f"best_epoch.{key}", str(pick.epoch))
        client.set_tag(parent_id, f"best_run.{key}", pick.run_id)
    print("Wrote " + ", ".join(str(p) for p in paths.values()))
    print(f"Logged on the parent run {parent_id} (artifacts under {REPORT_ARTIFACTS}/)")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["run", "status", "collect"])
    parser.add_argument("sweep", type=Path, help="sweep file (configs/sweeps/*.yaml)")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to run on (default: $RAY_ADDRESS, else local Ray)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray: CPUs to use")
    parser.add_argument("--num-gpus", type=int, default=None, help="local Ray: GPUs to use")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: the sweep file's, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="trial folders and report (default: the sweep file's output_dir)",
    )
    parser.add_argument(
        "--interval",
        choices=["t", "bootstrap"],
        default="t",
        help="95%% interval of the paired differences",
    )
    parser.add_argument(
        "--progress-seconds",
        type=float,
        default=PRINT_INTERVAL_S,
        help="run: seconds between progress lines (each running trial's epoch and val/acc_mean, "
        "time left)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="status: every trial")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.sweep)
    except SweepSpecError as error:
        raise SystemExit(f"error: {error}") from None
    if args.output_dir is not None:
        spec.output_dir = args.output_dir.resolve()
    if args.command == "run":
        return run(spec, args)
    if args.command == "status":
        status(spec, args)
        return 0
    collect(spec, args)
    return 0


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
