"""GPU benchmark: training steps per recalibration module, input throughput and a DDP fit.

    python -m benchmarks.gpu                      # on a CUDA machine: results/gpu.json + gpu.md
    python -m benchmarks.gpu --results-dir /tmp   # without CUDA: a CPU dry run (seconds)

Three parts, each written to the result file as it is done (a run cut short keeps them):

1. Steps: ResNet-50 at 224 px with each recalibration module, `eager` and `compiled`
   (`torch.compile`, default mode), in `bf16-mixed` (bfloat16 autocast, channels_last model
   and input) and `fp32` (torch's defaults: TF32 convolutions, float32 matmuls). A step is
   forward + cross-entropy + backward + SGD (momentum) step on one fixed random batch; the time
   is the mean over the timed steps (one synchronisation at the end), `ratio` is over `none`
   of the same mode and precision, `peak_mb` is `torch.cuda.max_memory_allocated` over the
   timed steps. A configuration that fails records its error and the run goes on.
2. Input: prepared LitData shards (the `input_pipeline` benchmark's generated photos and
   writer) streamed with one loader worker per usable core: images/s, and that rate over the
   fastest training step's images/s (above 1: the input keeps up with the GPU).
3. DDP: `experiments.officehome fit` on the demo config with `configs/trainer/ddp_gpus.yaml`
   (NCCL, every visible GPU, bf16-mixed) for one epoch, in a subprocess: wall time and result.

Time on one H100, which is run once with a 10-minute limit: the whole script stays under
`--budget-s` (480 s by default). In this order: the eager configurations (14, a few seconds each
with 5 warm-up and 20 timed steps at batch 128), the input part (512 generated images, shards
written, 3 timed passes: about a minute), the DDP fit (demo, 1 epoch, stopped at 150 s), then
the compiled configurations in priority order (bf16-mixed, then fp32; `none` and `srm` first)
while the budget lasts, each estimated at the longest compile so far (60 s before the first);
the rest are recorded as skipped.

Without CUDA the same code runs as a CPU dry run: ResNet-18 at 32 px, batch 2, one warm-up and
two timed steps, float32 and bfloat16 autocast, no compile and no DDP (skipped, with the
reason), 8 images for the input part, unless `--compile` / `--ddp` ask for them (DDP on CPUs
then runs over gloo with `configs/trainer/ddp_cpu.yaml`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmarks import DEMO_CONFIG, demo_environment, machine_description, write_result
from benchmarks.step_time import MODULES, NUM_CLASSES, BackboneWithClassifier
from lightning_modules.models.backbones import create_backbone

NAME = "gpu"
REPO = Path(__file__).resolve().parent.parent
PRECISIONS = ("bf16-mixed", "fp32")
# Compiled configurations run in this order while the budget lasts.
COMPILE_PRIORITY = ("none", "srm", "se", "ge_minus", "ge", "ge_plus", "mssar")
FIRST_COMPILE_ESTIMATE_S = 60.0
DDP_TIMEOUT_S = 150


def settings_for(cuda: bool, args: argparse.Namespace) -> dict:
    """The sizes of a run: the GPU defaults, or the CPU dry run's tiny ones."""
    if cuda:
        return {
            "backbone": args.backbone or "resnet50",
            "image_size": args.image_size or 224,
            "batch_size": args.batch_size or 128,
            "warmup_steps": 5,
            "timed_steps": args.steps or 20,
            "input_images": args.input_images or 512,
            "input_passes": 3,
        }
    return {
        "backbone": args.backbone or "resnet18",
        "image_size": args.image_size or 32,
        "batch_size": args.batch_size or 2,
        "warmup_steps": 1,
        "timed_steps": args.steps or 2,
        "input_images": args.input_images or 8,
        "input_passes": 1,
    }


class Step:
    """One SGD training step of a backbone + classifier on a fixed batch (callable)."""

    def __init__(self, module: str, precision: str, compiled: bool, config: dict, device) -> None:
        torch.manual_seed(0)
        model = BackboneWithClassifier(
            create_backbone(config["backbone"], module, None, config["image_size"])
        ).to(device)
        size, batch = config["image_size"], config["batch_size"]
        self.images = torch.randn(batch, 3, size, size, device=device)
        self.labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
        self.mixed = precision == "bf16-mixed"
        if self.mixed:
            model = model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        if compiled:
            # A fresh start for each model: the blocks' forward code is shared by all of them,
            # and past `torch._dynamo.config.cache_size_limit` recompilations of one code
            # object Dynamo silently runs it eagerly.
            torch.compiler.reset()
        self.model = torch.compile(model) if compiled else model
        self.device = torch.device(device)

    def __call__(self) -> None:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed)
        with autocast:
            loss = F.cross_entropy(self.model(self.images), self.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(module: str, mode: str, precision: str, config: dict, device: str) -> dict:
    """One configuration's row: build, warm up (compiling), time, peak memory."""
    row = {"module": module, "mode": mode, "precision": precision}
    start = time.perf_counter()
    step = None
    try:
        step = Step(module, precision, mode == "compiled", config, device)
        for _ in range(config["warmup_steps"]):
            step()
        synchronize(device)
        row["warmup_s"] = time.perf_counter() - start
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(config["timed_steps"]):
            step()
        synchronize(device)
        seconds = (time.perf_counter() - start) / config["timed_steps"]
        row["step_ms"] = 1000 * seconds
        row["images_per_s"] = config["batch_size"] / seconds
        if device == "cuda":
            row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception as error:  # recorded and skipped: one failure must not end a one-shot run
        row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    finally:
        del step  # frees the model before the next one is built
        if device == "cuda":
            torch.cuda.empty_cache()
    return row


def run_steps(
    config: dict,
    device: str,
    modules,
    compile_: bool,
    deadline: float,
    on_row=None,
    clock=time.monotonic,
    modes=("eager", "compiled"),
) -> list[dict]:
    """Every (module, mode, precision) row of `modes`; compiled ones only while `deadline` (in
    `clock`'s seconds) allows; `on_row(rows)` after each measured row."""
    plan = [(m, "eager", p) for p in PRECISIONS for m in modules if "eager" in modes]
    ordered = [m for m in COMPILE_PRIORITY if m in modules]
    plan += [(m, "compiled", p) for p in PRECISIONS for m in ordered if "compiled" in modes]
    rows, compile_times = [], []
    for module, mode, precision in plan:
        compile_estimate = max(compile_times, default=FIRST_COMPILE_ESTIMATE_S)
        if mode == "compiled" and not compile_:
            rows.append(
                {
                    "module": module,
                    "mode": mode,
                    "precision": precision,
                    "skipped": "compile not requested (CPU dry run; --compile runs it)",
                }
            )
            continue
        if mode == "compiled" and clock() + compile_estimate > deadline:
            rows.append(
                {
                    "module": module,
                    "mode": mode,
                    "precision": precision,
                    "skipped": f"time budget (compile estimated at {compile_estimate:.0f} s)",
                }
            )
            continue
        row = measure(module, mode, precision, config, device)
        if mode == "compiled" and "warmup_s" in row:
            compile_times.append(row["warmup_s"])
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    add_ratios(rows)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """`ratio`: step time over `none`'s in the same mode and precision."""
    plain = {
        (r["mode"], r["precision"]): r["step_ms"]
        for r in rows
        if r["module"] == "none" and "step_ms" in r
    }
    for row in rows:
        baseline = plain.get((row["mode"], row["precision"]))
        if baseline and "step_ms" in row:
            row["ratio"] = row["step_ms"] / baseline


def run_input(config: dict, workers: int) -> dict:
    """Shard (LitData) throughput with `workers` loader workers (images/s over timed passes)."""
    from benchmarks.input_pipeline import generate_jpegs, make_loaders, one_pass, write_shards

    with tempfile.TemporaryDirectory(prefix="stylebench-gpu-input-") as folder:
        paths = generate_jpegs(Path(folder), config["input_images"])
        shards = write_shards(paths, Path(folder) / "shards")
        loader, normalize = make_loaders(paths, 224, 32, workers, shards)["shards"]
        if workers > 0:
            one_pass(loader, normalize)  # starts the persistent workers
        rates = []
        for _ in range(config["input_passes"]):
            count, seconds = one_pass(loader, normalize)
            rates.append(count / seconds)
        del loader
    return {
        "workers": workers,
        "images": config["input_images"],
        "passes": config["input_passes"],
        "images_per_s": statistics.median(rates),
    }


def run_ddp(cuda: bool, extra_args: list[str] | None = None) -> dict:
    """One demo epoch of `experiments.officehome fit` under DDP in a subprocess."""
    overlay = "ddp_gpus.yaml" if cuda else "ddp_cpu.yaml"
    devices = torch.cuda.device_count() if cuda else 2
    result = {"backend": "nccl" if cuda else "gloo", "processes": devices, "overlay": overlay}
    with demo_environment(DEMO_CONFIG) as demo_args:
        command = [
            sys.executable,
            "-m",
            "experiments.officehome",
            "fit",
            *demo_args,
            "--config",
            str(REPO / "configs" / "trainer" / overlay),
            "--trainer.max_epochs",
            "1",
            *(extra_args or []),
        ]
        # Lightning's DDP launcher starts the other ranks with this same command line.
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                cwd=REPO,
                env=environment,
                capture_output=True,
                text=True,
                timeout=DDP_TIMEOUT_S,
            )
            result["returncode"] = done.returncode
            if done.returncode != 0:
                result["error"] = done.stderr[-1500:]
        except subprocess.TimeoutExpired:
            result["error"] = f"timed out after {DDP_TIMEOUT_S} s"
        result["seconds"] = time.perf_counter() - start
        tracking_uri = demo_args[demo_args.index("--trainer.logger.init_args.tracking_uri") + 1]
        result.update(_last_run_metrics(tracking_uri))
    return result


def _last_run_metrics(tracking_uri: str) -> dict:
    """val/acc_mean and train/loss_epoch of the store's latest run, if any."""
    if not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return {}
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"]
    )
    if not runs:
        return {}
    metrics = runs[0].data.metrics
    return {k: metrics[k] for k in ("val/acc_mean", "train/loss_epoch") if k in metrics}


COLUMNS = (
    "module",
    "mode",
    "precision",
    "step_ms",
    "ratio",
    "images_per_s",
    "peak_mb",
    "warmup_s",
    "skipped",
    "error",
)

NOTES = """
Step = forward + cross-entropy + backward + SGD (momentum) step on one fixed random batch; the
time is the mean over the timed steps with one synchronisation at the end; `ratio` is over
`none` in the same mode and precision; `warmup_s` includes `torch.compile`'s compilation for
compiled rows; `peak_mb` is `torch.cuda.max_memory_allocated` over the timed steps (CUDA only).
`bf16-mixed` = bfloat16 autocast with a channels_last model and input; `fp32` = no autocast.
`input` (in the JSON): prepared-shard images/s with one loader worker per usable core, and that
over the fastest step's images/s. `ddp`: one demo epoch of `experiments.officehome fit` under
DDP in a subprocess (NCCL on every GPU).
"""


def run(args: argparse.Namespace, results_dir=None) -> dict:
    """Run the three parts, writing the result after each; return the result dictionary."""
    started = time.monotonic()
    cuda = torch.cuda.is_available() and not args.cpu
    device = "cuda" if cuda else "cpu"
    threads = torch.get_num_threads()
    if not cuda:
        # One thread: on a shared machine OpenMP threads that wait on each other made the
        # tiny dry-run steps up to 50x slower.
        torch.set_num_threads(1)
    try:
        return _run(args, results_dir, started, cuda, device)
    finally:
        torch.set_num_threads(threads)


def _run(args, results_dir, started: float, cuda: bool, device: str) -> dict:
    config = settings_for(cuda, args)
    result = {
        "name": args.name,
        "machine": machine_description(device),
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
        "gpus": torch.cuda.device_count() if cuda else 0,
        "dry_run": not cuda,
        "settings": {
            **config,
            "budget_s": args.budget_s,
            "modules": " ".join(args.modules),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "rows": [],
    }

    def save(rows=None) -> None:
        if rows is not None:
            result["rows"] = rows
        result["elapsed_s"] = time.monotonic() - started
        parts = [f"{key}: {json.dumps(result[key])}" for key in ("input", "ddp") if key in result]
        write_result(args.name, result, COLUMNS, NOTES + "\n" + "\n\n".join(parts), results_dir)

    compile_ = cuda or args.compile
    deadline = started + args.budget_s
    rows = run_steps(config, device, args.modules, compile_, deadline, save, modes=("eager",))
    save(rows)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result["input"] = run_input(config, workers if cuda else 0)
    save()
    if cuda or args.ddp:
        result["ddp"] = run_ddp(cuda, args.ddp_args)
    else:
        result["ddp"] = {"skipped": "no CUDA: NCCL needs GPUs (--ddp runs gloo on the CPU)"}
    save()
    # Compiled configurations last, with what is left of the budget.
    rows += run_steps(
        config,
        device,
        args.modules,
        compile_,
        deadline,
        lambda compiled: save(rows + compiled),
        modes=("compiled",),
    )
    fastest = max((r["images_per_s"] for r in rows if "images_per_s" in r), default=None)
    if fastest:
        result["input"]["over_fastest_step"] = result["input"]["images_per_s"] / fastest
    save(rows)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--backbone", default=None, help="resnet50 on CUDA, resnet18 dry run")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--input-images", type=int, default=None, help="512 on CUDA, 8 dry run")
    parser.add_argument("--budget-s", type=float, default=480.0, help="whole-run time budget")
    parser.add_argument("--cpu", action="store_true", help="dry run even where CUDA is present")
    parser.add_argument("--compile", action="store_true", help="compiled rows in a dry run too")
    parser.add_argument("--ddp", action="store_true", help="DDP fit in a dry run too (gloo)")
    parser.add_argument(
        "--ddp-args",
        nargs=argparse.REMAINDER,
        default=None,
        help="extra `fit` arguments for the DDP part (last option)",
    )
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None) -> dict:
    """Run with parsed options and write the result files."""
    return run(args, results_dir)


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.gpu [--budget-s ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run_from_args(args, args.results_dir)
    print(json.dumps({k: result[k] for k in ("device_name", "elapsed_s")}))
    return result


if __name__ == "__main__":
    main()
