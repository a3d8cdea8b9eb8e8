"""`make demo`: train the plain and the SRM backbone on generated Office-Home-like data.

Both runs are logged to MLflow (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI says otherwise);
the script ends with a per-domain test-accuracy table read back from MLflow.
"""

from __future__ import annotations

import argparse
import time

from mlflow import MlflowClient

from experiments.officehome import main as officehome_main
from lightning_modules.metrics import metric_safe_name
from lightning_modules.tracking import default_tracking_uri

DEMO_CONFIG = "configs/officehome/demo.yaml"


def train_and_test(module: str, extra_args: list[str]) -> str:
    """Fit one model, test its best checkpoint into the same MLflow run; returns the run id."""
    cli = officehome_main(
        ["fit", "--config", DEMO_CONFIG, "--model.init_args.recalibration", module, *extra_args]
    )
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    cli.trainer.logger.finalize("success")
    return cli.trainer.logger.run_id


def accuracy_table(run_ids: dict[str, str], domains: list[str], tracking_uri: str) -> str:
    """Markdown table of test accuracy per domain and style robustness, read back from MLflow."""
    client = MlflowClient(tracking_uri)
    header = ["module", *domains, "mean", "worst", "style mean", "style robustness"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for module, run_id in run_ids.items():
        metrics = client.get_run(run_id).data.metrics
        keys = [f"test/acc/{metric_safe_name(d)}" for d in domains] + [
            "test/acc_mean",
            "test/acc_worst",
            "test/style_acc_mean",
        ]
        cells = [f"{100 * metrics[k]:.1f}" if k in metrics else "-" for k in keys]
        # A ratio (style_acc_mean / acc_mean, 1 = unaffected by style), not a percentage.
        robustness = metrics.get("test/style_robustness")
        cells.append("-" if robustness is None else f"{robustness:.2f}")
        lines.append("| " + " | ".join([module, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=["none", "srm"])
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    extra = [] if args.max_epochs is None else ["--trainer.max_epochs", str(args.max_epochs)]

    started = time.perf_counter()
    run_ids = {module: train_and_test(module, extra) for module in args.modules}
    elapsed = time.perf_counter() - started

    from datamodules.demo import DEMO_DOMAINS

    tracking_uri = default_tracking_uri()
    print(f"\nTest accuracy (%) per domain, chance = {100 / 6:.1f}% ({elapsed:.0f} s in all):\n")
    print(accuracy_table(run_ids, list(DEMO_DOMAINS), tracking_uri))
    print(f"\nRuns logged to {tracking_uri} (experiment 'officehome'): {run_ids}")
    print("Open the MLflow UI with `make ui` and browse http://127.0.0.1:5000")
    print("Compare all runs so far: python -m experiments.compare --experiment officehome")


if __name__ == "__main__":
    main()
