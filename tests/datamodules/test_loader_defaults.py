"""Loader defaults that scale with the machine: workers from the usable cores and GPUs."""

from __future__ import annotations

import os

import pytest

from datamodules.data import loaders
from datamodules.data.loaders import MAX_DEFAULT_WORKERS, default_num_workers


@pytest.mark.parametrize(
    ("cores", "devices", "expected"),
    [(2, 1, 1), (1, 1, 1), (16, 1, 8), (64, 8, 7), (16, 2, 7), (32, 4, 7), (8, 4, 1), (96, 1, 8)],
)
def test_workers_share_the_cores_among_devices(cores, devices, expected) -> None:
    # cores // devices, one left for each training process, at least 1, at most 8.
    expected_formula = max(1, min(MAX_DEFAULT_WORKERS, cores // devices - 1))
    assert default_num_workers(cores, devices) == expected_formula == expected


def test_the_default_reads_the_usable_cores(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.setattr(loaders.torch.cuda, "is_available", lambda: False)
    assert default_num_workers() == 8
    monkeypatch.setattr(loaders.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loaders.torch.cuda, "device_count", lambda: 3)
    assert default_num_workers() == 3


def test_datamodule_default_and_explicit_workers(tmp_path, monkeypatch) -> None:
    from datamodules.officehome import OfficeHomeDemoDataModule

    monkeypatch.setattr("datamodules.base.default_num_workers", lambda: 5)
    derived = OfficeHomeDemoDataModule(cache_dir=str(tmp_path))
    assert derived.num_workers == 5 and derived.persistent_workers
    explicit = OfficeHomeDemoDataModule(cache_dir=str(tmp_path), num_workers=0)
    assert explicit.num_workers == 0 and not explicit.persistent_workers
