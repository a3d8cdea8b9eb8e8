"""How well each block's gates tell the domains apart: a distance and a linear probe per block.

For every block (in depth order):
- `domain_cosine_distance`: mean pairwise cosine distance (1 - cos) between the domains' mean
  gate vectors (`BlockGateStatistics.domain_separation`); `class_cosine_distance` likewise.
- `domain_probe_accuracy`: a linear probe predicting the domain from an image's gate vector.
  Per-image vectors are those `GateRecorder(keep_per_domain=N)` kept (at most N per domain).
  Each domain's images are shuffled with a seeded generator and split in halves: the probe is
  trained on the first halves and scored on the second. The probe is a multinomial logistic
  regression in torch on standardised gates (train-half mean and std; undefined gates become 0
  after standardising), zero-initialised, full batch, Adam (lr 0.05, 300 steps, weight decay
  1e-3): deterministic for a given input. `probe_chance` is the test half's majority-domain
  rate. Domains with fewer than 2 kept images are left out of the probe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_modules.analysis.gates import BlockGateStatistics

SEPARATION_COLUMNS = (
    "depth",
    "block",
    "channels",
    "domain_cosine_distance",
    "class_cosine_distance",
    "domain_probe_accuracy",
    "probe_chance",
    "probe_train_images",
    "probe_test_images",
)


def split_halves(domains: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices of the (train, test) halves, split per domain after a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for domain in torch.unique(domains).tolist():
        members = torch.nonzero(domains == domain).flatten()
        if len(members) < 2:
            continue
        members = members[torch.randperm(len(members), generator=generator)]
        half = len(members) // 2
        train.append(members[:half])
        test.append(members[half:])
    if not train:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(train), torch.cat(test)


def linear_probe_accuracy(
    features: Tensor, targets: Tensor, seed: int = 0, steps: int = 300
) -> tuple[float, float, int, int]:
    """(test accuracy, majority-class rate of the test half, train size, test size).

    NaN accuracies when fewer than two domains have two images or more.
    """
    train, test = split_halves(targets, seed)
    if len(train) == 0 or len(torch.unique(targets[train])) < 2:
        return float("nan"), float("nan"), len(train), len(test)
    features = features.double()
    mean = torch.nanmean(features[train], dim=0)
    std = (features[train] - mean).nan_to_num(0.0).pow(2).mean(0).sqrt().clamp_min(1e-8)
    standardized = ((features - mean) / std).nan_to_num(0.0)
    classes, encoded = torch.unique(targets, return_inverse=True)
    weight = torch.zeros(standardized.shape[1], len(classes), dtype=torch.float64)
    bias = torch.zeros(len(classes), dtype=torch.float64)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(standardized[train] @ weight + bias, encoded[train])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = (standardized[test] @ weight + bias).argmax(dim=1)
    accuracy = float((predicted == encoded[test]).double().mean())
    chance = float(torch.bincount(encoded[test]).max() / len(test))
    return accuracy, chance, len(train), len(test)


def separation_rows(
    statistics: Mapping[str, BlockGateStatistics],
    per_image: Mapping[str, tuple[Tensor, Tensor, Tensor]],
    seed: int = 0,
) -> list[dict]:
    """One row per block (columns `SEPARATION_COLUMNS`), in the order of `statistics`."""
    rows = []
    for depth, (block, stats) in enumerate(statistics.items()):
        if block in per_image:
            gates, domains, _ = per_image[block]
            accuracy, chance, n_train, n_test = linear_probe_accuracy(gates, domains, seed)
        else:
            accuracy, chance, n_train, n_test = float("nan"), float("nan"), 0, 0
        rows.append(
            {
                "depth": depth,
                "block": block,
                "channels": stats.channels,
                "domain_cosine_distance": stats.domain_separation,
                "class_cosine_distance": stats.class_separation,
                "domain_probe_accuracy": accuracy,
                "probe_chance": chance,
                "probe_train_images": n_train,
                "probe_test_images": n_test,
            }
        )
    return rows


def rows_to_csv(rows: list[dict]) -> str:
    """The rows as CSV text with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SEPARATION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rows_from_csv(text: str) -> list[dict]:
    """Rows written by `rows_to_csv`, numbers parsed back (depth and counts as int)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        parsed: dict = {}
        for key, value in row.items():
            if key == "block":
                parsed[key] = value
            elif key in ("depth", "channels", "probe_train_images", "probe_test_images"):
                parsed[key] = int(value)
            else:
                parsed[key] = float(value) if value not in ("", "nan") else float("nan")
        rows.append(parsed)
    return rows
