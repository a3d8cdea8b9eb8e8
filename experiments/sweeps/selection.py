"""Model selection from the logged validation history, as DomainBed defines it.

Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization" (ICLR 2021): a result is the
held-out (test) domains' accuracy of the model that a *selection method* picks among the
hyperparameter draws (and, here, the validations) of one module, held-out set and trial seed
(and, in a sweep with `cases`, one set of case labels: a source -> target pair is a sweep of its
own):

- `training_domain_validation`: the highest mean validation accuracy over the *trained*
  domains (`val/acc_mean`, which is over the trained domains only). The default, and the only
  method that needs nothing a real user would not have.
- `test_domain_oracle`: the highest validation accuracy on the held-out domains themselves
  (`val/acc_held_out_mean`). Flagged as an oracle: it looks at the test domains, an upper
  bound that is not a result, and here it picks and reports on the same validation split.
- `leave_one_domain_out`: for held-out set T, each draw is scored by the accuracy on one
  further domain d left out of training (the runs holding out T + {d}, one per training
  domain d), averaged over d at their last validation; the draw's run holding out T reports
  its last validation. Only where the sweep has those runs (a grid over pairs of held-out
  domains).

A validation is identified by the global step it was logged at (the MLflow step of
`val/acc_mean`), not by its epoch: with step-based validation (`trainer.val_check_interval:
300`, `check_val_every_n_epoch: null`, as DomainBed evaluates) an epoch can hold two
validations. The epoch is kept beside it for display. The reported number is the held-out mean
from the same history (`val/acc_held_out_mean`) for every method, so the methods are comparable;
for the multi-domain protocol (nothing held out) it is `val/acc_mean` and only training-domain
validation applies. Ties go to the earlier validation and the lower draw.

"Held out" here means evaluated without labelled training data: the held-out domains, and an
adaptation's target domains (which `val/acc_held_out_mean` averages over too).
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lightning_modules.names import (
    ACC_HELD_OUT_MEAN,
    MONITOR,
    VAL,
    domain_metric_key,
    domain_metric_prefix,
    metric_key,
    metric_safe_name,
)

SELECTION_METHODS = ("training_domain_validation", "test_domain_oracle", "leave_one_domain_out")
#: Flagged in every report: these look at the test domains.
ORACLE_METHODS = {"test_domain_oracle"}
TRAIN_SCORE = MONITOR
HELD_OUT_SCORE = metric_key(VAL, ACC_HELD_OUT_MEAN)
CHECKPOINT_SUFFIX = ".ckpt"
LAST_CHECKPOINT = "last" + CHECKPOINT_SUFFIX

#: (axis, label) of each `cases` axis that tells trials of one row apart (`pair: Ar2Cl`).
Cases = tuple[tuple[str, str], ...]


def case_text(cases: Cases) -> str:
    """`Ar2Cl` (the labels, in axis order, space-separated; '' without cases)."""
    return " ".join(label for _, label in cases)


@dataclass
class TrialRecord:
    """What selection and statistics read of one finished trial."""

    hash: str
    #: The row it belongs to: the module, or `<module>+<method>` in a sweep with methods (set in
    #: the grid or by a case).
    module: str
    #: The domains evaluated without labelled training data: held out, or adaptation targets.
    held_out: tuple[str, ...]
    seed: int
    draw: int
    run_id: str = ""
    #: metric -> {global step: value}, from the run's MLflow history (the step each validation
    #: was logged at; the later point where a restarted process logged a step twice).
    history: dict[str, dict[int, float]] = field(default_factory=dict)
    #: The run's final metrics (test/* of the tested checkpoint).
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str = ""
    state: str = "done"
    #: The recalibration module and training method apart ('' where the sweep sets none), for
    #: the module x method tables.
    recalibration: str = ""
    training_method: str = ""
    #: Lightning's epoch at each validation step (for display; empty where unknown).
    validation_epochs: dict[int, int] = field(default_factory=dict)
    #: The trial's case labels that its row does not say already: selection, tables and pairing
    #: keep trials of different labels apart (a case axis that only sets the method is in
    #: `module`).
    cases: Cases = ()
    _checkpoints: list[tuple[int, str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def held_out_label(self) -> str:
        return "+".join(self.held_out)

    @property
    def target_metric(self) -> str:
        """What a selection reports: the held-out mean, or the mean when nothing is held out."""
        return HELD_OUT_SCORE if self.held_out else TRAIN_SCORE

    def steps(self) -> list[int]:
        """The global steps of the run's validations, in order."""
        return sorted(self.history.get(TRAIN_SCORE, {}))

    def epoch_at(self, step: int) -> int:
        """Lightning's epoch at the validation of `step` (-1 where unknown)."""
        return self.validation_epochs.get(step, -1)

    def value(self, metric: str, step: int) -> float:
        return self.history.get(metric, {}).get(step, math.nan)

    def checkpoint_at(self, step: int) -> str:
        """The kept checkpoint of the validation logged at `step` ('' when none was kept).

        Found by the step stored in each checkpoint of the trial's folder, whatever
        `checkpoint.filename` named it (`best-epoch{epoch:03d}`, `best-step{step:06d}`, ...): a
        validation's metrics are logged at Lightning's step count before the batch that just ran
        is counted (`_batches_that_stepped`), and the checkpoint written after that validation
        stores `global_step`, the count after it: the logged step + 1, for epoch-end and
        mid-epoch validations alike. The two count the same thing, batches, because every
        method takes one counted optimizer step per batch (`methods/manual_steps.py`).
        A monitored checkpoint is preferred to `last.ckpt` of the same step.
        """
        if self._checkpoints is None:
            self._checkpoints = checkpoint_steps(self.checkpoint_dir)
        for global_step, path in self._checkpoints:
            if global_step == step + 1:
                return path
        return ""


def checkpoint_steps(folder: str) -> list[tuple[int, str]]:
    """(global step, path) of every readable checkpoint in `folder`, `last.ckpt` after the
    monitored ones; [] without a folder."""
    if not folder or not Path(folder).is_dir():
        return []
    import torch  # here: `status` and the report's tests need no torch

    found = []
    paths = sorted(
        Path(folder).glob(f"*{CHECKPOINT_SUFFIX}"),
        key=lambda p: (p.name == LAST_CHECKPOINT, p.name),
    )
    for path in paths:
        try:
            # mmap: the weights are not read, only the small pickled dict around them.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            found.append((int(checkpoint["global_step"]), str(path)))
        except (
            OSError,
            RuntimeError,
            EOFError,
            KeyError,
            TypeError,
            ValueError,
            pickle.UnpicklingError,
        ) as error:
            warnings.warn(
                f"{path}: not read as a Lightning checkpoint ({error}); skipped", stacklevel=2
            )
    return found


@dataclass
class Selection:
    """One method's pick for one module x case labels x held-out set x trial seed."""

    method: str
    module: str
    held_out: str
    seed: int
    draw: int
    #: The picked validation: its global step, and its epoch (display; -1 where unknown).
    step: int
    epoch: int
    #: The selection criterion's value at the pick.
    score: float
    #: The reported accuracy (the held-out mean, or the mean when nothing is held out).
    accuracy: float
    run_id: str
    trial_hash: str
    checkpoint: str
    cases: Cases = ()


def _best(candidates: list[tuple[float, int, int, TrialRecord]]):
    """The highest score; ties to the earlier step, then the lower draw; NaN never wins."""
    valid = [c for c in candidates if not math.isnan(c[0])]
    if not valid:
        return None
    return max(valid, key=lambda c: (c[0], -c[1], -c[2]))


def group_records(records: list[TrialRecord]) -> dict[tuple, list[TrialRecord]]:
    """Finished trials by (module, case labels, held-out set, trial seed): the draws one
    selection picks from."""
    groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for record in records:
        if record.state == "done":
            groups[(record.module, record.cases, record.held_out, record.seed)].append(record)
    return dict(sorted(groups.items()))


def _selection(method: str, score: float, step: int, draw: int, record: TrialRecord) -> Selection:
    """The Selection of a picked (score, step, draw, record) candidate of one group."""
    return Selection(
        method=method,
        module=record.module,
        held_out=record.held_out_label,
        seed=record.seed,
        draw=draw,
        step=step,
        epoch=record.epoch_at(step),
        score=score,
        accuracy=record.value(record.target_metric, step),
        run_id=record.run_id,
        trial_hash=record.hash,
        checkpoint=record.checkpoint_at(step),
        cases=record.cases,
    )


def select_over_history(records: list[TrialRecord], method: str) -> list[Selection]:
    """Training-domain validation or the oracle: the best (draw, validation) of each group."""
    selections = []
    for (_module, _cases, held_out, _seed), group in group_records(records).items():
        if method == "test_domain_oracle" and not held_out:
            continue  # nothing held out: the oracle would be training-domain validation
        score_metric = TRAIN_SCORE if method == "training_domain_validation" else HELD_OUT_SCORE
        candidates = [
            (record.value(score_metric, step), step, record.draw, record)
            for record in group
            for step in record.steps()
        ]
        best = _best(candidates)
        if best is not None:
            selections.append(_selection(method, *best))
    return selections


def select_leave_one_domain_out(records: list[TrialRecord]) -> list[Selection]:
    """DomainBed's leave-one-domain-out validation, where the sweep has the runs for it."""
    done = [r for r in records if r.state == "done"]
    by_key = {(r.module, r.cases, frozenset(r.held_out), r.seed, r.draw): r for r in done}
    prefix = domain_metric_prefix(VAL)
    # Held-out domains carry their configured names (`Real World`), metric keys the metric-safe
    # ones (`Real_World`): one domain, named as configured wherever a run held it out.
    configured = {d for r in done for d in r.held_out}
    by_safe_name = {metric_safe_name(d): d for d in configured}
    logged = {k.removeprefix(prefix) for r in done for k in r.history if k.startswith(prefix)}
    domains = sorted(configured | {by_safe_name.get(d, d) for d in logged})
    selections = []
    for (module, cases, held_out, seed), group in group_records(records).items():
        if not held_out:
            continue
        training = [d for d in domains if d not in held_out]
        candidates = []
        for record in group:
            scores = []
            for extra in training:
                key = (module, cases, frozenset(held_out) | {extra}, seed, record.draw)
                other = by_key.get(key)
                if other is None or not other.steps():
                    scores = []
                    break
                scores.append(other.value(domain_metric_key(VAL, extra), other.steps()[-1]))
            if scores and record.steps():
                last = record.steps()[-1]
                candidates.append((sum(scores) / len(scores), last, record.draw, record))
        best = _best(candidates)
        if best is not None:
            selections.append(_selection("leave_one_domain_out", *best))
    return selections


def select_all(records: list[TrialRecord]) -> dict[str, list[Selection]]:
    """Every method that has the runs it needs, by method name."""
    results = {
        "training_domain_validation": select_over_history(records, "training_domain_validation"),
        "test_domain_oracle": select_over_history(records, "test_domain_oracle"),
        "leave_one_domain_out": select_leave_one_domain_out(records),
    }
    return {method: picks for method, picks in results.items() if picks}


def best_checkpoints(selections: dict[str, list[Selection]]) -> list[Selection]:
    """Per method, module, case labels and held-out set: the seed's pick with the highest
    selection score (the checkpoint to test later)."""
    best: dict[tuple, Selection] = {}
    for method, picks in selections.items():
        for pick in picks:
            key = (method, pick.module, pick.cases, pick.held_out)
            if key not in best or pick.score > best[key].score:
                best[key] = pick
    return [best[key] for key in sorted(best)]
