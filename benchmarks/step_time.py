"""Training-step time and activation memory of recalibrated ResNets against the plain backbone.

Every model (ResNet-18 and ResNet-50 with each recalibration module, SRM also on its reference
autograd path, and timm's SE-ResNet-50 as an outside reference) takes SGD training steps
(forward + cross-entropy + backward + momentum SGD step) on the same random batch. The models run
round-robin in one process, one step each per round, so that a slow spell of a shared machine
hits all of them alike; each model's time is the median over rounds, reported as a ratio to the
plain backbone of the same depth.

Memory: the bytes of the tensors autograd saves for the backward pass (collected with
`torch.autograd.graph.saved_tensors_hooks`, each storage counted once, parameters excluded) are
the activation memory, the part of a step's peak that a recalibration module changes; the
model state (parameters + gradients + SGD momentum) is added for the step's peak. This count is
exact and the same on every device, where CPU allocator statistics are not available and process
RSS is dominated by allocator caching. On CUDA, `torch.cuda.max_memory_allocated` of a step is
recorded as well.

Precision: `--precisions fp32 bf16` runs every model in float32 and under bfloat16 autocast in
the same rounds (the bf16 rows are named `<model>@bf16` and compared with `<depth>-none@bf16`).
Clock: on the CPU with one torch thread, a step's time is the thread's CPU time by default, what
the step costs on an idle core; wall time would add whatever other processes take of a shared
machine (`--clock wall` measures it).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks import machine_description, write_result
from lightning_modules.models.backbones import create_backbone

NAME = "step_time"
MODULES = ("none", "se", "srm", "ge_minus", "ge", "ge_plus", "mssar")
BACKBONES = ("resnet18", "resnet50")
NUM_CLASSES = 1000
# Precision name -> autocast dtype (None: float32 without autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class BackboneWithClassifier(nn.Module):
    """A project backbone (globally pooled features) with a linear 1000-class classifier."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def build_models(
    backbones, modules, image_size: int, with_timm: bool, precisions=("fp32",)
) -> dict[str, dict]:
    """Name -> {model, backbone, module, precision}: every variant the benchmark compares.

    With several precisions each model is built once per precision (same initial weights), the
    names of all but float32 suffixed with `@<precision>`.
    """
    models: dict[str, dict] = {}
    for precision in precisions:
        suffix = "" if precision == "fp32" else f"@{precision}"
        torch.manual_seed(0)
        for name, entry in _variants(backbones, modules, image_size, with_timm).items():
            models[name + suffix] = {**entry, "precision": precision}
    return models


def _variants(backbones, modules, image_size: int, with_timm: bool) -> dict[str, dict]:
    """Name -> {model, backbone, module}: the models of one precision."""
    models: dict[str, dict] = {}
    for backbone in backbones:
        for module in modules:
            models[f"{backbone}-{module}"] = {
                "model": BackboneWithClassifier(
                    create_backbone(backbone, module, None, image_size)
                ),
                "backbone": backbone,
                "module": module,
            }
        if "srm" in modules:
            # The reference formula through autograd, to show what the fused path saves.
            models[f"{backbone}-srm_reference"] = {
                "model": BackboneWithClassifier(
                    create_backbone(
                        backbone, "srm", None, image_size, recalibration_kwargs={"fused": False}
                    )
                ),
                "backbone": backbone,
                "module": "srm (reference autograd)",
            }
    if with_timm and "resnet50" in backbones:
        import timm

        models["timm-seresnet50"] = {
            "model": timm.create_model("seresnet50", pretrained=False, num_classes=NUM_CLASSES),
            "backbone": "resnet50",
            "module": "timm seresnet50",
        }
    return models


def saved_tensor_bytes(forward: Callable[[], object], excluded_pointers: set[int]) -> int:
    """Bytes autograd saves for the backward of `forward()`, each storage once.

    Args:
        forward: Runs the forward pass whose saved tensors are counted.
        excluded_pointers: Storage addresses not to count (the parameters).
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in excluded_pointers:
            storages[pointer] = storage.nbytes()
        # A detached alias keeps the storage alive (so no pointer is reused and counted twice)
        # without the reference cycle that returning a saved output itself would make between
        # it and its grad_fn: such cycles wait for Python's garbage collector, and each held a
        # whole forward's activations (gigabytes per model at 224 px) until then.
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def saved_activation_bytes(step) -> int:
    """Bytes autograd saves for the backward of one forward, each storage once, no parameters."""
    return saved_tensor_bytes(lambda: step(measure_only_forward=True), step.parameter_pointers)


class TrainingStep:
    """One SGD training step of a model on a fixed batch (callable)."""

    def __init__(self, model, images, labels, channels_last: bool, autocast_dtype=None) -> None:
        self.model = model.to(images.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.images, self.labels = images, labels
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.autocast_dtype = autocast_dtype
        self.parameter_pointers = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.images.device.type, dtype=self.autocast_dtype)

    def __call__(self, measure_only_forward: bool = False) -> None:
        with self._autocast():
            loss = F.cross_entropy(self.model(self.images), self.labels)
        if measure_only_forward:
            return
        loss.backward()
        self.optimizer.step()
        # Gradients are dropped after the step, not before the next one: with every model of
        # the benchmark resident in one process, gradients kept between steps would add a copy
        # of every model's parameters to the process's memory (the step's peak is unchanged).
        self.optimizer.zero_grad(set_to_none=True)
        if self.images.device.type == "cuda":
            torch.cuda.synchronize()

    def state_bytes(self) -> int:
        """Parameters + gradients + momentum buffers: three copies of the parameters."""
        return 3 * sum(p.numel() * p.element_size() for p in self.model.parameters())


def run(
    batch_size: int = 16,
    image_size: int = 224,
    repeats: int = 3,
    warmup: int = 1,
    backbones=BACKBONES,
    modules=MODULES,
    with_timm: bool = True,
    device: str = "cpu",
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    precisions=None,
    clock: str = "auto",
) -> dict:
    """Time every model round-robin; return the result dictionary (see `write_result`).

    `precisions` (names of `PRECISIONS`) overrides `autocast_dtype`: every model in each.
    `clock`: `wall`, `cpu` (the calling thread's CPU time; meaningful with one torch thread on
    the CPU) or `auto` (`cpu` on the CPU with one thread, else `wall`).
    """
    if precisions is None:
        precisions = ["bf16" if autocast_dtype == torch.bfloat16 else "fp32"]
    if clock == "auto":
        clock = "cpu" if device == "cpu" and torch.get_num_threads() == 1 else "wall"
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    models = build_models(backbones, modules, image_size, with_timm, precisions)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    steps = {
        name: TrainingStep(
            entry["model"], images, labels, channels_last, PRECISIONS[entry["precision"]]
        )
        for name, entry in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            start = timer()
            step()
            elapsed = timer() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    rows = []
    for name, step in steps.items():
        entry = models[name]
        row = {
            "model": name,
            "backbone": entry["backbone"],
            "module": entry["module"],
            "precision": entry["precision"],
            "step_ms_median": 1000 * statistics.median(times[name]),
            "step_ms_min": 1000 * min(times[name]),
            "repeats": len(times[name]),
            "activation_mb": saved_activation_bytes(step) / 2**20,
            "state_mb": step.state_bytes() / 2**20,
        }
        row["peak_mb"] = row["activation_mb"] + row["state_mb"]
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            step()
            row["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    by_name = {row["model"]: row for row in rows}
    for row in rows:
        suffix = "" if row["precision"] == "fp32" else f"@{row['precision']}"
        plain = by_name.get(f"{row['backbone']}-none{suffix}")
        if plain is not None:
            row["time_ratio"] = row["step_ms_median"] / plain["step_ms_median"]
            row["activation_ratio"] = row["activation_mb"] / plain["activation_mb"]
            row["peak_ratio"] = row["peak_mb"] / plain["peak_mb"]
            if "cuda_max_allocated_mb" in row:
                row["cuda_peak_ratio"] = (
                    row["cuda_max_allocated_mb"] / plain["cuda_max_allocated_mb"]
                )
    return {
        "name": NAME,
        "machine": machine_description(device),
        "settings": {
            "batch_size": batch_size,
            "image_size": image_size,
            "warmup_rounds": warmup,
            "timed_rounds": repeats,
            "channels_last": channels_last,
            "precisions": " ".join(precisions),
            "clock": clock,
            "optimizer": "SGD momentum 0.9",
        },
        "rows": rows,
        "targets": targets(by_name),
    }


def targets(by_name: dict[str, dict]) -> dict:
    """The issue's targets, evaluated on this run (only those whose rows exist)."""
    result = {}
    srm, timm_row = by_name.get("resnet50-srm"), by_name.get("timm-seresnet50")
    if srm and "time_ratio" in srm:
        result["srm_resnet50_step_ratio_le_1.05"] = srm["time_ratio"] <= 1.05
        result["srm_resnet50_peak_memory_ratio_le_1.02"] = srm["peak_ratio"] <= 1.02
    if timm_row and "time_ratio" in timm_row:
        limit = timm_row["time_ratio"]
        # ResNet-18's modules are compared with the same ratio: timm has no SE-ResNet-18.
        result["every_module_step_ratio_le_timm_seresnet50"] = all(
            row["time_ratio"] <= limit
            for row in by_name.values()
            if "time_ratio" in row
            and row["module"] not in ("none", "timm seresnet50")
            and "reference" not in row["module"]
        )
    return result


COLUMNS = (
    "model",
    "precision",
    "step_ms_median",
    "repeats",
    "time_ratio",
    "activation_mb",
    "activation_ratio",
    "peak_mb",
    "peak_ratio",
)

NOTES = """
Training step = forward + cross-entropy + backward + SGD (momentum) step on one fixed random
batch, all models round-robin in one process; `step_ms_median` is the median over the timed
rounds (`repeats`), `time_ratio` that median over the plain backbone's of the same depth (timm's
SE-ResNet-50 against ResNet-50). `activation_mb`: bytes autograd saves for the backward
(saved-tensor hooks, each storage once, parameters excluded); `peak_mb` adds parameters,
gradients and momentum, i.e. the step's peak up to allocator overhead and transient buffers.
`srm_reference` is the SRM reference formula differentiated by autograd (`fused=False`).
`@bf16` rows run under bfloat16 autocast, their ratios against the plain backbone's `@bf16` row.
Step times are the main thread's CPU time when `clock` is `cpu` (one torch thread on the CPU).
"""


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.step_time [--batch-size ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--modules", nargs="+", default=list(MODULES))
    parser.add_argument("--no-timm", action="store_true", help="leave out timm's seresnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        default=None,
        help="run every model in each (rows `<model>@bf16`); overrides --bf16",
    )
    parser.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: per-core ratios; on a shared machine several OpenMP "
        "threads wait on each other and their timings scatter widely; 0 = torch's default)",
    )
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None) -> dict:
    """Run with parsed options and write the result files."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = run(
        batch_size=args.batch_size,
        image_size=args.image_size,
        repeats=args.repeats,
        warmup=args.warmup,
        backbones=args.backbones,
        modules=args.modules,
        with_timm=not args.no_timm,
        device=args.device,
        channels_last=args.channels_last,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
        precisions=getattr(args, "precisions", None),
        clock=getattr(args, "clock", "auto"),
    )
    write_result(args.name, result, COLUMNS, NOTES, results_dir)
    return result


if __name__ == "__main__":
    main()
