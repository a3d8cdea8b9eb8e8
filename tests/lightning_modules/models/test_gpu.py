"""CUDA paths: compiled SRM, a two-GPU NCCL DDP step, the GPU benchmark itself.

`pytest -m gpu` runs them on a machine with a GPU; elsewhere they are skipped (the compiled
SRM also runs on the CPU, as a slow test). The fused-vs-reference and autocast-dtype checks on
CUDA are the `cuda` cases of test_mixed_precision.py, marked `gpu` the same way.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks import run as bench_run
from lightning_modules.models.recalibration.srm import StyleRecalibration

REPO = Path(__file__).resolve().parents[3]
CUDA_MARKS = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize(
    "device",
    [pytest.param("cpu", marks=pytest.mark.slow), pytest.param("cuda", marks=CUDA_MARKS)],
)
def test_compiled_srm_traces_the_formula_and_matches_eager(device) -> None:
    # fullgraph=True fails on any graph break: under torch.compile SRM must switch from its
    # hand-written autograd Functions (opaque to the compiler) to the formula, which the
    # compiler fuses. Compared with the eager fused path under the same bf16 autocast, both
    # computing their statistics in float32: a few bfloat16 roundings apart (u = 2^-8).
    torch.compiler.reset()
    torch.manual_seed(0)
    eager = StyleRecalibration(16).to(device).train()
    with torch.no_grad():
        eager.cfc.weight.normal_()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True)
    scale = 0.5 + 2 * torch.rand(8, 16, 1, 1, device=device)
    x = (torch.randn(8, 16, 7, 7, device=device) * scale + torch.randn_like(scale)).bfloat16()
    grad = torch.randn(8, 16, 7, 7, device=device).bfloat16()
    results = []
    for module in (eager, compiled):
        inputs = x.clone().requires_grad_()
        with torch.autocast(device, dtype=torch.bfloat16):
            out = module(inputs)
        out.backward(grad)
        results.append((out, inputs.grad))
    (out, grad_x), (compiled_out, compiled_grad_x) = results
    assert compiled_out.dtype == torch.bfloat16
    assert relative_error(compiled_out, out) < 4 * 2.0**-8
    assert relative_error(compiled_grad_x, grad_x) < 4 * 2.0**-8
    assert relative_error(compiled_module.cfc.weight.grad, eager.cfc.weight.grad) < 4 * 2.0**-8
    torch.testing.assert_close(compiled_module.bn.running_var, eager.bn.running_var)


DDP_SCRIPT = """
import os, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from lightning_modules.models.backbones import create_backbone

dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
torch.manual_seed(0)  # the same initial weights on every rank
model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(create_backbone("resnet18", "srm"))
model = DistributedDataParallel(model.cuda().to(memory_format=torch.channels_last))
torch.manual_seed(1 + rank)  # different data on each rank
images = torch.randn(4, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
with torch.autocast("cuda", dtype=torch.bfloat16):
    loss = model(images).float().square().mean()
loss.backward()
# DDP averages the gradients: every rank must hold the same ones.
flat = torch.cat([p.grad.flatten() for p in model.parameters()])
gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert all(torch.equal(gathered[0], g) for g in gathered), "gradients differ between ranks"
assert torch.isfinite(flat).all()
dist.destroy_process_group()
print("DDP_OK", rank)
"""


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpu_nccl_ddp_step_with_srm(tmp_path) -> None:
    script = tmp_path / "ddp_step.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("DDP_OK") == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_gpu_benchmark_on_cuda(tmp_path) -> None:
    # The real (not dry-run) path at quick sizes: eager rows measured with peak memory, the
    # input part with one worker per core, and the DDP demo fit over NCCL.
    bench_run.main(["--quick", "--only", "gpu", "--results-dir", str(tmp_path)])
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert not result["dry_run"]
    assert result["device_name"] == torch.cuda.get_device_name(0)
    eager = [row for row in result["rows"] if row["mode"] == "eager"]
    assert len(eager) == 4
    for row in eager:
        assert "error" not in row, row
        assert row["peak_mb"] > 0 and row["images_per_s"] > 0
    assert result["input"]["workers"] > 0 and result["input"]["images_per_s"] > 0
    assert result["ddp"].get("returncode") == 0, result["ddp"]
