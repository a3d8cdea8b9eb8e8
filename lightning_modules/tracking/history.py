"""A resumed run's metric history: each step once, from the process that finally produced it.

A process killed without warning (SIGKILL, a lost machine) has logged steps past its last
checkpoint; the process that resumes the run from that checkpoint computes those steps again.
MLflow cannot delete single metric points, so the run keeps both, and the resume marks which
of them the resumed process replaces: `record_resume` appends `{"step", "time"}` to the run's
tag `RESUMES_TAG` (a JSON list) when the resumed process logs its first point (`step`: that
point's step; `time`: when the resume started, in ms). A point logged before `time` at a step
`>= step` belongs to the killed process and is replaced. `metric_history` reads a metric with
those points left out, and one point per step (the latest: Lightning logs `epoch` twice at an
epoch's last step): the run's history as one uninterrupted process would have logged it.

The MLflow UI shows the raw points: at the steps a resume re-did there are two, the killed
process's and the resumed one's (equal on the CPU, where a resume is exact).
"""

from __future__ import annotations

import json
from typing import Any

#: Run tag: the resumes of the run, a JSON list of {"step": first step logged, "time": ms}.
RESUMES_TAG = "stylebench.resumes"
#: Run tag on a run whose writer died and that another run replaced (its id).
REPLACED_BY_TAG = "stylebench.replaced_by"
#: MLflow caps tag values; the oldest resumes are dropped past this many.
MAX_RESUMES = 100


def resumes(run: Any) -> list[dict[str, int]]:
    """The resume markers of a run (`RESUMES_TAG`), oldest first."""
    text = run.data.tags.get(RESUMES_TAG)
    if not text:
        return []
    try:
        return [{"step": int(r["step"]), "time": int(r["time"])} for r in json.loads(text)]
    except (ValueError, KeyError, TypeError):
        return []


def record_resume(client: Any, run_id: str, step: int, time_ms: int) -> None:
    """Append a resume marker to the run (see the module docstring)."""
    marks = [*resumes(client.get_run(run_id)), {"step": int(step), "time": int(time_ms)}]
    client.set_tag(run_id, RESUMES_TAG, json.dumps(marks[-MAX_RESUMES:]))


def replaced(point: Any, marks: list[dict[str, int]]) -> bool:
    """Whether a metric point was logged by a process a later resume replaced."""
    return any(point.step >= m["step"] and point.timestamp < m["time"] for m in marks)


def metric_history(client: Any, run_id: str, key: str) -> list[Any]:
    """The run's points of metric `key`, one per step in step order: the points replaced by a
    resume are left out, and of several points at one step the latest is kept."""
    marks = resumes(client.get_run(run_id))
    by_step: dict[int, Any] = {}
    for point in client.get_metric_history(run_id, key):
        if replaced(point, marks):
            continue
        kept = by_step.get(point.step)
        if kept is None or point.timestamp >= kept.timestamp:
            by_step[point.step] = point
    return [by_step[step] for step in sorted(by_step)]
