"""MCC: the class-confusion loss against explicit loops, the whole step against an independent
computation, where its gradient goes, no bottleneck, the refusal without targets, a tiny fit that
learns, kill-and-resume, and a fit through the CLI with the overlay."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from lightning_modules.cli import check_settings
from lightning_modules.methods.mcc import mcc_loss
from lightning_modules.optimization import InverseDecayLR
from tests.helpers.adaptation_methods import (
    accuracies,
    adaptation_batch,
    assert_resume_is_seamless,
    bottleneck_by_hand,
    fit,
    source_and_target_logits,
    tiny_model,
    training_batch,
)

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")


def class_confusion_by_loops(logits: torch.Tensor, temperature: float) -> float:
    """The paper's (and TLlib's) MCC with plain Python loops over samples and classes."""
    rows = logits.tolist()
    count, classes = len(rows), len(rows[0])
    probabilities = []
    for row in rows:
        exps = [math.exp(value / temperature) for value in row]
        probabilities.append([e / sum(exps) for e in exps])
    weights = []
    for p in probabilities:
        entropy = -sum(q * math.log(q + 1e-5) for q in p)
        weights.append(1 + math.exp(-entropy))
    weights = [count * w / sum(weights) for w in weights]
    confusion = [
        [sum(weights[b] * probabilities[b][i] * probabilities[b][j] for b in range(count))
         for j in range(classes)]
        for i in range(classes)
    ]  # fmt: skip
    column_sums = [sum(confusion[i][j] for i in range(classes)) for j in range(classes)]
    normalised = [
        [confusion[i][j] / column_sums[j] for j in range(classes)] for i in range(classes)
    ]
    off_diagonal = sum(normalised[i][j] for i in range(classes) for j in range(classes) if i != j)
    return off_diagonal / classes


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_the_class_confusion_equals_explicit_loops(temperature: float) -> None:
    logits = 3 * torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    value = mcc_loss(logits, temperature)
    assert float(value) == pytest.approx(class_confusion_by_loops(logits, temperature), rel=1e-5)


def test_confident_distinct_predictions_have_no_confusion_and_uniform_ones_the_most() -> None:
    confident = 50 * torch.eye(4)
    assert float(mcc_loss(confident, 1.0)) == pytest.approx(0.0, abs=1e-6)
    # all predictions uniform: every normalised entry 1/classes, (classes - 1) / classes
    assert float(mcc_loss(torch.zeros(5, 4), 2.5)) == pytest.approx(3 / 4)


def test_the_step_is_source_cross_entropy_plus_weighted_confusion_of_the_target() -> None:
    weight, temperature = 0.6, 2.0
    model = tiny_model("mcc", {"bottleneck_dim": 8, "weight": weight, "temperature": temperature})
    model.train()
    batch = adaptation_batch(5)
    output = model.method.training_loss(model, training_batch(batch))
    source, labels, domains = batch["source"]
    images = torch.cat([source, batch["target"][0]])
    features = bottleneck_by_hand(model, model.backbone(images))
    source_logits, target_logits = source_and_target_logits(model, features, domains, len(source))
    cross_entropy = F.cross_entropy(source_logits, labels)
    confusion = class_confusion_by_loops(target_logits.detach(), temperature)
    assert float(output.metrics["class_confusion"]) == pytest.approx(confusion, rel=1e-5)
    expected = float(cross_entropy.detach()) + weight * confusion
    assert float(output.loss.detach()) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(output.logits, source_logits)


def test_the_confusion_gradient_reaches_the_backbone_the_bottleneck_and_the_heads() -> None:
    model = tiny_model("mcc", {"bottleneck_dim": 8})
    model.train()
    batch = training_batch(adaptation_batch(6))
    parts = {
        "backbone": list(model.backbone.parameters()),
        "bottleneck": list(model.method.bottleneck.parameters()),
        "heads": list(model.head.parameters()),
    }
    with_mcc = model.method.training_loss(model, batch).loss
    grads = {name: torch.autograd.grad(with_mcc, p, retain_graph=True) for name, p in parts.items()}
    model.method.weight = 0.0
    without = model.method.training_loss(model, batch).loss
    for name, params in parts.items():
        plain = torch.autograd.grad(without, params, retain_graph=True)
        difference = sum(
            float((a - b).abs().sum()) for a, b in zip(grads[name], plain, strict=True)
        )
        assert difference > 1e-6, name


def test_without_a_bottleneck_the_heads_read_the_backbone() -> None:
    model = tiny_model("mcc", {"bottleneck_dim": None})
    assert model.method.bottleneck is None and model.method.parameter_groups() == []
    assert model.head.heads["Art"].in_features == model.backbone.feature_dim
    model.eval()
    images = adaptation_batch(0)["source"][0]
    domains = torch.ones(len(images), dtype=torch.long)
    with torch.no_grad():
        expected = model.head.heads["Clipart"](model.backbone(images))
        torch.testing.assert_close(model(images, domains), expected)


def test_refused_without_target_domains() -> None:
    model = tiny_model("mcc")
    data = SimpleNamespace(batch_size=8, eval_batch_size=8, target_domains=[])
    with pytest.raises(ValueError, match=r"'mcc' adapts to unlabelled target domains"):
        check_settings(model, data)
    batch = training_batch(adaptation_batch(0))
    batch.target_images = None
    with pytest.raises(ValueError, match=r"mcc needs unlabelled target images"):
        model.method.training_loss(model, batch)
    with pytest.raises(ValueError, match=r"temperature=0 must be > 0"):
        tiny_model("mcc", {"temperature": 0})


def test_a_tiny_mcc_fit_learns_the_source_and_transfers_to_the_target() -> None:
    train = [adaptation_batch(seed) for seed in range(6)]
    model = tiny_model("mcc", {"bottleneck_dim": 64})
    losses = fit(model, train, 5)
    assert sum(losses[-6:]) < sum(losses[:6]), losses
    source, target = accuracies(model, [adaptation_batch(seed) for seed in range(100, 104)])
    assert source >= 0.75 and target >= 0.6, (source, target)  # chance: 1/3


def test_kill_and_resume_keeps_the_bottleneck_and_the_lr_decay(tmp_path) -> None:
    def state(model):
        norm = model.method.bottleneck[1]
        return [norm.running_mean, norm.running_var, model.method.bottleneck[0].weight]

    assert_resume_is_seamless(
        tmp_path,
        "mcc",
        {"bottleneck_dim": 8},
        state,
        lr_scheduler=lambda optimizer: InverseDecayLR(optimizer, gamma=0.5),
    )


@pytest.mark.slow
def test_mcc_through_the_cli_with_the_overlay(tmp_path, mlflow_uri) -> None:
    """The overlay's TLlib recipe (lr 0.005, bottleneck 2048) on the tiny demo, Art -> Clipart."""
    from experiments.officehome import main
    from tests.helpers.cli import tiny_args
    from tests.helpers.paths import REPO

    cli = main(
        [
            "fit",
            *tiny_args(
                tmp_path,
                "--config",
                str(REPO / "configs/adaptation/mcc.yaml"),
                "--trainer.max_steps",
                "-1",
                "--trainer.max_epochs",
                "2",
                "--data.init_args.domains",
                "[Art, Clipart]",
                "--data.init_args.target_domains",
                "[Clipart]",
                "--data.init_args.batch_size",
                "8",
                epochs=2,
            ),
        ]
    )
    steps = cli.trainer.global_step
    assert steps > 2 and cli.model.method.bottleneck_dim == 2048
    assert cli.model.head.heads["Art"].in_features == 2048
    heads = next(g for g in cli.trainer.optimizers[0].param_groups if g["name"] == "heads")
    assert heads["lr"] == pytest.approx(0.005 * (1 + 0.001 * steps) ** -0.75)
    metrics = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id).data.metrics
    assert "train/class_confusion_epoch" in metrics and "val/acc/Clipart" in metrics
