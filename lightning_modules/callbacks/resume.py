"""Exact resume: the random state of the main process goes into every checkpoint.

Lightning's checkpoint restores the model, the optimizer, the schedulers, the loops and, with a
stateful loader, the position in the epoch (`datamodules.data.resumable.ResumableLoader`). What
the step itself draws (dropout, the style layers' coins, any `torch.rand` in a training method)
comes from the process's global generators, which a checkpoint does not hold: a resumed run
would draw differently from the step it resumes at. `ExactResume` keeps torch's (CPU and CUDA),
NumPy's and Python's global states in the checkpoint, as its callback state, and puts them back
just before the first training batch after the resume, once whatever the resumed process did
before (building the model, a validation) has drawn its own numbers.

The states are stored as tensors and plain numbers, so that the checkpoint still loads with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer


def random_state() -> dict[str, Any]:
    """The global random states of this process: torch (CPU, and CUDA when initialised),
    NumPy's legacy generator and Python's `random`."""
    version, words, gauss = random.getstate()
    numpy_name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(numpy_name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64)},
        "python_gauss": gauss,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Put back what `random_state` returned."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (saved["name"], keys, saved["position"], saved["has_gauss"], saved["cached"])
    )
    python = state["python"]
    words = tuple(int(word) for word in python["words"].tolist())
    random.setstate((python["version"], words, state.get("python_gauss")))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(Callback):
    """Keeps the global random state in checkpoints and restores it at the first training
    batch after a resume (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"random_state": random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("random_state")

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            state, self._pending = self._pending, None
            set_random_state(state)
