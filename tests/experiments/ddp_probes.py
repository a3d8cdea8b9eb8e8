"""Callbacks the two-process DDP fits of `test_ddp_methods.py` add with
`--trainer.callbacks+=ddp_probes.<name>` (this folder on PYTHONPATH): each rank writes what it
saw to `<default_root_dir>/<name>-rank<r>.json`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from pytorch_lightning import Callback
from torch.nn import functional as F


class GroupDROProbe(Callback):
    """Per step and rank: the rank's per-domain cross-entropy sums and counts, computed here
    on copies of the backbone and heads before the step (one pass per domain, as the method
    does), and GroupDRO's q after the step."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images, labels, domains = batch
        backbone, head = copy.deepcopy(pl_module.backbone), copy.deepcopy(pl_module.head)
        sums = [0.0] * len(pl_module.trained_domains)
        counts = [0] * len(pl_module.trained_domains)
        with torch.no_grad():
            for domain in sorted(set(domains.tolist())):
                rows = domains == domain
                logits = head(backbone(images[rows]), domains[rows])
                loss = F.cross_entropy(logits, labels[rows])
                position = pl_module.trained_domains.index(pl_module.domain_names[domain])
                sums[position] = float(loss) * int(rows.sum())
                counts[position] = int(rows.sum())
        self.steps.append({"sums": sums, "counts": counts})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[-1]["q"] = pl_module.method.q.tolist()

    def on_train_end(self, trainer, pl_module) -> None:
        path = Path(trainer.default_root_dir) / f"GroupDROProbe-rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"eta": pl_module.method.groupdro_eta, "steps": self.steps}))
