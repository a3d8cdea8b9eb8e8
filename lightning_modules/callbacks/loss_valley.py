"""SWAD's loss valley: which validated segments of training the final average is made of.

SWAD (Cha et al., "SWAD: Domain Generalization by Seeking Flat Minima", NeurIPS 2021,
arXiv:2102.08604; reference code khanrc/swad, class `LossValley`) splits training into
segments, one per evaluation: segment k holds the steps since evaluation k-1 and is scored by
the validation loss measured at evaluation k. This module holds the decision rule, on
segment numbers (0, 1, ... in order) and losses, so it can be checked by hand, and the
equal-weight mean of segments' weights (`SegmentMean`); the callback
(`lightning_modules/callbacks/averaging.py`) keeps the weights.

The rule, with `n_converge` (3), `n_tolerance` (6) and `tolerance_ratio` r (0.3; 0.2 for VLCS):
- Start. Training has converged at the first evaluation k where the oldest of the last
  `n_converge` segments has the lowest loss of them (ties: the oldest counts as lowest). The
  valley starts at that oldest segment, s = k - n_converge + 1, and the threshold is
  (1 + r) x the mean of those `n_converge` losses.
- Growth. At every later evaluation k, the oldest of the last `n_tolerance` segments,
  c = k - n_tolerance + 1, joins the valley (with any segment between the valley's end and c)
  if the lowest loss of the last `n_tolerance` segments is at most the threshold.
- End. Otherwise the valley is dead: it ends at c - 1 (the segments before the `n_tolerance`
  losses above the threshold), and training should stop.
- Flush. When training ends with the valley alive, the queued segments (after the valley's end)
  join it from the oldest while the lowest loss from that segment to the last is at most the
  threshold, i.e. up to the last segment whose own loss is within the threshold.

This is the paper's Algorithm 1 (average every step from t_s = the start of the converged
window to t_e = the end before the `n_tolerance` window that left the valley), in segments.
The reference code differs at the start: it seeds the average by copying the converged segment
into a fresh `AveragedModel` (whose count stays 0, so the next update overwrites it) and then
adds segments of its smoothing queue chosen with an index shifted by one, so the converged
segment may be counted twice or lost and segments before the start may be added. Its flush
also drops the oldest queued segment unconditionally. Here the valley is exactly the
contiguous run of segments from the start, each counted once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class LossValley:
    """The loss-valley window over validated segments.

    Attributes:
        n_converge: Segments in the convergence window.
        n_tolerance: Segments in the window whose lowest loss must stay within the threshold.
        tolerance_ratio: The threshold is (1 + tolerance_ratio) x the converged window's mean.
        losses: Each validated segment's loss, by segment number.
        start: The valley's first segment (None until training has converged).
        stop: One past the valley's last segment so far (segments [start, stop) are in it).
        threshold: The loss a window's lowest loss must not exceed (None until converged).
        dead: The valley has ended before training did.
    """

    n_converge: int = 3
    n_tolerance: int = 6
    tolerance_ratio: float = 0.3
    losses: list[float] = field(default_factory=list)
    start: int | None = None
    stop: int = 0
    threshold: float | None = None
    dead: bool = False

    def __post_init__(self) -> None:
        if self.n_converge < 1 or self.n_tolerance < 1:
            raise ValueError(
                f"SWAD n_converge={self.n_converge} and n_tolerance={self.n_tolerance} must be "
                "at least 1 (the paper: 3 and 6)"
            )
        if self.tolerance_ratio < 0:
            raise ValueError(
                f"SWAD tolerance_ratio={self.tolerance_ratio} must be >= 0 (the paper: 0.3, "
                "0.2 for VLCS)"
            )

    @property
    def converged(self) -> bool:
        return self.start is not None

    def observe(self, loss: float) -> range:
        """Record the next segment's validation loss; the segments that joined the valley."""
        self.losses.append(float(loss))
        if self.dead:
            return range(0)
        newest = len(self.losses) - 1
        if self.start is None:
            window = self.losses[-self.n_converge :]
            if len(window) < self.n_converge or window[0] > min(window):
                return range(0)
            self.start = self.stop = newest - self.n_converge + 1
            self.threshold = (1.0 + self.tolerance_ratio) * sum(window) / len(window)
            return range(0)
        oldest = newest - self.n_tolerance + 1
        if oldest < self.stop:
            # The window still reaches back to the valley's own segments (the start's loss is
            # the converged window's lowest, within the threshold): nothing to decide yet.
            return range(0)
        first = self.stop
        if min(self.losses[oldest:]) > self.threshold:
            self.dead = True
            self.stop = oldest
        else:
            self.stop = oldest + 1
        return range(first, self.stop)

    def flush(self) -> range:
        """The queued segments that join the valley when training ends now (nothing changes)."""
        if self.start is None or self.dead:
            return range(0)
        within = [i for i in range(self.stop, len(self.losses)) if self.losses[i] <= self.threshold]
        return range(self.stop, (within[-1] + 1) if within else self.stop)

    def first_needed(self) -> int:
        """The oldest segment whose weights a future decision may still need."""
        if self.dead:
            return len(self.losses)
        if self.start is None:
            # The next evaluation's convergence window starts here.
            return max(0, len(self.losses) - self.n_converge + 1)
        return self.stop

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("n_converge", "n_tolerance", "tolerance_ratio"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"the checkpoint's SWAD {name}={state[name]} differs from this run's "
                    f"{getattr(self, name)}; resume with the same SWAD settings"
                )
        for name, value in state.items():
            setattr(self, name, list(value) if name == "losses" else value)


class SegmentMean:
    """The equal-weight mean of whole-model weight lists (parameters then buffers), by a
    running update. Integer tensors (BatchNorm's `num_batches_tracked`) take the newest
    segment's value."""

    def __init__(self, tensors: list[torch.Tensor] | None = None, count: int = 0) -> None:
        self.tensors = tensors
        self.count = count

    def add(self, segment: list[torch.Tensor]) -> None:
        self.count += 1
        if self.tensors is None:
            self.tensors = [t.clone() for t in segment]
            return
        for average, value in zip(self.tensors, segment, strict=True):
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 / self.count)
            else:
                average.copy_(value)

    def copy(self) -> SegmentMean:
        tensors = None if self.tensors is None else [t.clone() for t in self.tensors]
        return SegmentMean(tensors, self.count)
