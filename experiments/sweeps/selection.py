"""Model selection from the logged per-epoch history, as DomainBed defines it.

Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization" (ICLR 2021): a result is the
held-out (test) domains' accuracy of the model that a *selection method* picks among the
hyperparameter draws (and, here, the epochs) of one module, held-out set and trial seed:

- `training_domain_validation`: the highest mean validation accuracy over the *trained*
  domains (`val/acc_mean`, which is over the trained domains only). The default, and the only
  method that needs nothing a real user would not have.
- `test_domain_oracle`: the highest validation accuracy on the held-out domains themselves
  (`val/acc_held_out_mean`). Flagged as an oracle: it looks at the test domains, an upper
  bound that is not a result, and here it picks and reports on the same validation split.
- `leave_one_domain_out`: for held-out set T, each draw is scored by the accuracy on one
  further domain d left out of training (the runs holding out T + {d}, one per training
  domain d), averaged over d at their last epoch; the draw's run holding out T reports its
  last epoch. Only where the sweep has those runs (a grid over pairs of held-out domains).

The reported number is the held-out mean from the same per-epoch history (`val/acc_held_out_mean`)
for every method, so the methods are comparable; for the multi-domain protocol (nothing held
out) it is `val/acc_mean` and only training-domain validation applies. Ties go to the earlier
epoch and the lower draw.
"""

from __future__ import annotations

import math
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


@dataclass
class TrialRecord:
    """What selection and statistics read of one finished trial."""

    hash: str
    #: The row it belongs to: the module, or `<module>+<method>` in a sweep with methods.
    module: str
    held_out: tuple[str, ...]
    seed: int
    draw: int
    run_id: str = ""
    #: metric -> {epoch: value}, from the run's MLflow history (the last point of each epoch).
    history: dict[str, dict[int, float]] = field(default_factory=dict)
    #: The run's final metrics (test/* of the tested checkpoint).
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str = ""
    state: str = "done"
    #: The recalibration module and training method apart ('' where the sweep sets none), for
    #: the module x method tables.
    recalibration: str = ""
    training_method: str = ""

    @property
    def held_out_label(self) -> str:
        return "+".join(self.held_out)

    @property
    def target_metric(self) -> str:
        """What a selection reports: the held-out mean, or the mean when nothing is held out."""
        return HELD_OUT_SCORE if self.held_out else TRAIN_SCORE

    def epochs(self) -> list[int]:
        return sorted(self.history.get(TRAIN_SCORE, {}))

    def value(self, metric: str, epoch: int) -> float:
        return self.history.get(metric, {}).get(epoch, math.nan)

    def checkpoint_at(self, epoch: int) -> str:
        """The kept checkpoint of that epoch ('' when none was kept)."""
        if not self.checkpoint_dir:
            return ""
        folder = Path(self.checkpoint_dir)
        best = folder / f"best-epoch{epoch:03d}.ckpt"
        if best.is_file():
            return str(best)
        last = folder / "last.ckpt"
        if self.epochs() and epoch == self.epochs()[-1] and last.is_file():
            return str(last)
        return ""


@dataclass
class Selection:
    """One method's pick for one module x held-out set x trial seed."""

    method: str
    module: str
    held_out: str
    seed: int
    draw: int
    epoch: int
    #: The selection criterion's value at the pick.
    score: float
    #: The reported accuracy (the held-out mean, or the mean when nothing is held out).
    accuracy: float
    run_id: str
    trial_hash: str
    checkpoint: str


def _best(candidates: list[tuple[float, int, int, TrialRecord]]):
    """The highest score; ties to the earlier epoch, then the lower draw; NaN never wins."""
    valid = [c for c in candidates if not math.isnan(c[0])]
    if not valid:
        return None
    return max(valid, key=lambda c: (c[0], -c[1], -c[2]))


def group_records(records: list[TrialRecord]) -> dict[tuple, list[TrialRecord]]:
    """Finished trials by (module, held-out set, trial seed): the draws one selection picks from."""
    groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for record in records:
        if record.state == "done":
            groups[(record.module, record.held_out, record.seed)].append(record)
    return dict(sorted(groups.items()))


def _selection(method: str, score: float, epoch: int, draw: int, record: TrialRecord) -> Selection:
    """The Selection of a picked (score, epoch, draw, record) candidate of one group."""
    return Selection(
        method,
        record.module,
        record.held_out_label,
        record.seed,
        draw,
        epoch,
        score,
        record.value(record.target_metric, epoch),
        record.run_id,
        record.hash,
        record.checkpoint_at(epoch),
    )


def select_over_history(records: list[TrialRecord], method: str) -> list[Selection]:
    """Training-domain validation or the oracle: the best (draw, epoch) of each group."""
    selections = []
    for (_module, held_out, _seed), group in group_records(records).items():
        if method == "test_domain_oracle" and not held_out:
            continue  # nothing held out: the oracle would be training-domain validation
        score_metric = TRAIN_SCORE if method == "training_domain_validation" else HELD_OUT_SCORE
        candidates = [
            (record.value(score_metric, epoch), epoch, record.draw, record)
            for record in group
            for epoch in record.epochs()
        ]
        best = _best(candidates)
        if best is not None:
            selections.append(_selection(method, *best))
    return selections


def select_leave_one_domain_out(records: list[TrialRecord]) -> list[Selection]:
    """DomainBed's leave-one-domain-out validation, where the sweep has the runs for it."""
    done = [r for r in records if r.state == "done"]
    by_key = {(r.module, frozenset(r.held_out), r.seed, r.draw): r for r in done}
    prefix = domain_metric_prefix(VAL)
    # Held-out domains carry their configured names (`Real World`), metric keys the metric-safe
    # ones (`Real_World`): one domain, named as configured wherever a run held it out.
    configured = {d for r in done for d in r.held_out}
    by_safe_name = {metric_safe_name(d): d for d in configured}
    logged = {k.removeprefix(prefix) for r in done for k in r.history if k.startswith(prefix)}
    domains = sorted(configured | {by_safe_name.get(d, d) for d in logged})
    selections = []
    for (module, held_out, seed), group in group_records(records).items():
        if not held_out:
            continue
        training = [d for d in domains if d not in held_out]
        candidates = []
        for record in group:
            scores = []
            for extra in training:
                other = by_key.get((module, frozenset(held_out) | {extra}, seed, record.draw))
                if other is None or not other.epochs():
                    scores = []
                    break
                scores.append(other.value(domain_metric_key(VAL, extra), other.epochs()[-1]))
            if scores and record.epochs():
                last = record.epochs()[-1]
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
    """Per method, module and held-out set: the seed's pick with the highest selection score
    (the checkpoint to test later)."""
    best: dict[tuple[str, str, str], Selection] = {}
    for method, picks in selections.items():
        for pick in picks:
            key = (method, pick.module, pick.held_out)
            if key not in best or pick.score > best[key].score:
                best[key] = pick
    return [best[key] for key in sorted(best)]
