"""The sweep in MLflow: its experiment, its parent run, and its trials read back as records.

Everything a sweep knows about its progress is in MLflow (the trial runs' tags and status) and
in the trials' checkpoint folders, so `status`, `collect` and a second `run` need nothing else.
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments.sweeps.expansion import SweepSpec, Trial, canonical_json
from experiments.sweeps.selection import TrialRecord
from experiments.sweeps.trials import (
    ROLE_TAG,
    SWEEP_TAG,
    find_trial_runs,
    trial_dir,
    trial_state,
)
from lightning_modules.names import (
    ACC_HELD_OUT_MEAN,
    EPOCH,
    MONITOR,
    VAL,
    domain_metric_prefix,
    metric_key,
)
from lightning_modules.tracking import default_tracking_uri, tracking_client

#: MLflow 3's experiment type: the UI opens a `custom_model_development` experiment on its
#: training-runs view instead of the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: Validation metrics read for selection and learning curves (plus `val/acc/<domain>`).
HISTORY_METRICS = (MONITOR, metric_key(VAL, ACC_HELD_OUT_MEAN))
#: The adaptation targets (unlabelled in training, evaluated with labels: held out to the report).
TARGET_DOMAINS_KEY = "data.init_args.target_domains"


def absolute_tracking_uri(uri: str) -> str:
    """A relative SQLite path made absolute: trials run in other working directories."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(os.getcwd(), uri.removeprefix(prefix)).resolve())
    return uri


def resolve_tracking_uri(spec: SweepSpec, override: str | None = None) -> str:
    """--tracking-uri, else the sweep file's tracking_uri, else $MLFLOW_TRACKING_URI or
    sqlite:///mlflow.db."""
    return absolute_tracking_uri(override or spec.tracking_uri or default_tracking_uri())


def sweep_experiment(client: MlflowClient, spec: SweepSpec, create: bool) -> str | None:
    """The sweep's experiment id (created, and tagged as a training experiment, if asked)."""
    experiment = client.get_experiment_by_name(spec.experiment)
    if experiment is None:
        if not create:
            return None
        experiment_id = client.create_experiment(spec.experiment)
    else:
        experiment_id = experiment.experiment_id
    if create and (experiment is None or EXPERIMENT_KIND_TAG not in experiment.tags):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


def find_parent_run(client: MlflowClient, experiment_id: str, spec: SweepSpec) -> Run | None:
    """The sweep's parent run (the oldest, should a race have made two)."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{SWEEP_TAG}` = '{spec.name}' and tags.`{ROLE_TAG}` = 'parent'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def open_sweep(spec: SweepSpec, tracking_uri: str) -> tuple[MlflowClient, str, Run]:
    """Prepare the store once (under its lock), then find or create experiment and parent run."""
    client = tracking_client(tracking_uri)
    experiment_id = sweep_experiment(client, spec, create=True)
    parent = find_parent_run(client, experiment_id, spec)
    if parent is None:
        parent = client.create_run(
            experiment_id,
            run_name=spec.name,
            tags={
                SWEEP_TAG: spec.name,
                ROLE_TAG: "parent",
                "mlflow.note.content": spec.description or f"Sweep {spec.name}",
            },
        )
        client.log_artifact(parent.info.run_id, str(spec.path))
        trials = spec.trials()
        for key, value in {
            "sweep.trials": len(trials),
            "sweep.seeds": ",".join(map(str, spec.seeds)),
            "sweep.n_draws": spec.n_draws,
            "sweep.entry": spec.entry,
            "sweep.configs": ",".join(p.name for p in spec.configs),
        }.items():
            client.log_param(parent.info.run_id, key, str(value))
    return client, experiment_id, parent


def open_existing(spec: SweepSpec, tracking_uri: str) -> tuple[MlflowClient, str, Run]:
    """Experiment and parent run of a sweep that has been run; a clear error otherwise."""
    client = tracking_client(tracking_uri)
    experiment_id = sweep_experiment(client, spec, create=False)
    parent = find_parent_run(client, experiment_id, spec) if experiment_id else None
    if parent is None:
        raise SystemExit(
            f"sweep {spec.name!r} has no runs in {tracking_uri} (experiment {spec.experiment!r}); "
            f"start it with `python -m experiments.sweep run {spec.path}`"
        )
    return client, experiment_id, parent


def metric_history(client: MlflowClient, run: Run, metric: str) -> dict[int, float]:
    """{global step: value} of a validation metric: each validation is its own point, however
    many an epoch holds (the later of two points at one step: a process that started over)."""
    history: dict[int, float] = {}
    for point in sorted(
        client.get_metric_history(run.info.run_id, metric), key=lambda m: (m.step, m.timestamp)
    ):
        history[point.step] = point.value
    return history


def validation_epochs(client: MlflowClient, run: Run, steps: Iterable[int]) -> dict[int, int]:
    """{step: epoch} for the given steps: Lightning's `epoch` metric at the same step, else its
    latest point before it (steps before any `epoch` point are left out)."""
    epochs = {m.step: int(m.value) for m in client.get_metric_history(run.info.run_id, EPOCH)}
    ordered = sorted(epochs)
    found = {}
    for step in steps:
        index = bisect.bisect_right(ordered, step)
        if index:
            found[step] = epochs[ordered[index - 1]]
    return found


def case_axes(spec: SweepSpec) -> list[str]:
    """The `cases` axes whose labels the report's rows must keep apart: every axis but those
    that only name the row, i.e. whose every case sets the method (or the module) and no two
    cases the same one (`method: {erm: ..., mcc: ...}`: the row `srm+mcc` says the label).
    So `srm+mcc` on Ar2Cl is paired with `none` on Ar2Cl, not with the other pairs."""
    row_keys = (spec.module_key, spec.method_axis.key)
    axes = []
    for axis, cases in spec.cases.items():
        rows = [canonical_json([settings.get(k) for k in row_keys]) for settings in cases.values()]
        names_row = all(any(k in settings for k in row_keys) for settings in cases.values())
        if not (names_row and len(set(rows)) == len(rows)):
            axes.append(axis)
    return axes


def evaluated_only(spec: SweepSpec, trial: Trial) -> list[str]:
    """The trial's domains without labelled training data: held out, then adaptation targets
    (`val/acc_held_out_mean` averages over both)."""
    targets = trial.overrides.get(TARGET_DOMAINS_KEY) or []
    targets = [str(t) for t in (targets if isinstance(targets, list) else [targets])]
    held_out = spec.held_out_of(trial)
    return held_out + [t for t in targets if t not in held_out]


def load_records(
    client: MlflowClient,
    spec: SweepSpec,
    experiment_id: str,
    parent_run_id: str,
    with_history: bool = True,
) -> list[TrialRecord]:
    """One record per trial of the sweep file (pending ones too), with histories if asked."""
    runs = find_trial_runs(client, experiment_id, spec.name, parent_run_id)
    axes = case_axes(spec)
    records = []
    for trial in spec.trials():
        run = runs.get(trial.hash)
        record = TrialRecord(
            hash=trial.hash,
            module=spec.variant_of(trial),
            held_out=tuple(evaluated_only(spec, trial)),
            seed=trial.seed,
            draw=trial.draw,
            run_id=run.info.run_id if run else "",
            metrics=dict(run.data.metrics) if run else {},
            checkpoint_dir=str(trial_dir(spec.output_dir, trial) / "checkpoints"),
            state=trial_state(run),
            recalibration=spec.module_of(trial),
            training_method=spec.method_of(trial),
            cases=tuple((axis, str(trial.grid_point[axis])) for axis in axes),
        )
        if run is not None and with_history and record.state == "done":
            domains = sorted(k for k in run.data.metrics if k.startswith(domain_metric_prefix(VAL)))
            names = [*HISTORY_METRICS, *domains]
            record.history = {name: metric_history(client, run, name) for name in names}
            record.history = {k: v for k, v in record.history.items() if v}
            record.validation_epochs = validation_epochs(client, run, record.steps())
        records.append(record)
    return records


def state_counts(records: list[TrialRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record.state] += 1
    return dict(counts)
