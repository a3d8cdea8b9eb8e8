"""CDAN and CDAN+E: the maps, the GRL schedule and its counter, the whole loss against an
independent computation, the reversed gradient, the bottleneck in evaluation, the refusal without
targets, a tiny fit that learns, kill-and-resume, and a fit through the CLI with the overlay."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from lightning_modules.cli import check_settings
from lightning_modules.methods.cdan import (
    ConditionalDiscriminator,
    grl_coefficient,
    multilinear_map,
)
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
from tests.helpers.domainbed_fits import assert_same_gradients

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")


SMALL = {"bottleneck_dim": 8, "hidden_features": 16}


def test_the_full_map_is_the_flattened_outer_product_class_major() -> None:
    generator = torch.Generator().manual_seed(0)
    features, predictions = torch.randn(3, 4, generator=generator), torch.rand(3, 5)
    mapped = multilinear_map(features, predictions)
    assert mapped.shape == (3, 5 * 4)
    for b in range(3):
        for c in range(5):
            for k in range(4):
                assert mapped[b, c * 4 + k] == pytest.approx(
                    float(predictions[b, c] * features[b, k])
                )


def test_the_grl_coefficient_follows_tllibs_warm_start() -> None:
    assert grl_coefficient(0) == 0.0
    assert grl_coefficient(1000) == pytest.approx(0.46212, abs=1e-5)  # 2/(1+e^-1) - 1
    assert grl_coefficient(2000) == pytest.approx(0.76159, abs=1e-5)
    assert grl_coefficient(10**6) == pytest.approx(1.0)


def test_the_discriminator_is_tllibs_batchnorm_mlp() -> None:
    layers = list(ConditionalDiscriminator(20, 7))
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (layers[0].in_features, layers[0].out_features, layers[-1].out_features) == (20, 7, 1)


def test_the_discriminator_reads_classes_times_bottleneck_or_the_randomized_width() -> None:
    full = tiny_model("cdan", SMALL).method.discriminator[0]
    assert full.in_features == 3 * 8
    randomized = tiny_model("cdan", {**SMALL, "randomized": True, "randomized_dim": 12}).method
    assert randomized.discriminator[0].in_features == 12
    assert randomized.mapping.feature_matrix.shape == (8, 12)
    assert randomized.mapping.class_matrix.shape == (3, 12)


def discriminator_by_hand(model, inputs: torch.Tensor) -> torch.Tensor:
    """Linear, BatchNorm1d (batch statistics), ReLU, twice, then Linear: one logit per row."""
    layers = list(model.method.discriminator)
    hidden = inputs
    for linear, norm in ((layers[0], layers[1]), (layers[3], layers[4])):
        hidden = hidden @ linear.weight.t() + linear.bias
        mean, variance = hidden.mean(0), hidden.var(0, unbiased=False)
        hidden = (hidden - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias
        hidden = torch.relu(hidden)
    return (hidden @ layers[6].weight.t() + layers[6].bias).squeeze(1)


def independent_terms(model, batch: dict, entropy: bool, randomized: bool):
    """(source cross-entropy, transfer BCE without reversal) of the CDAN paper and TLlib,
    written out: the map with loops over classes, the entropy weights, the BCE with source 1."""
    source, labels, domains = batch["source"]
    target = batch["target"][0]
    count = len(source)
    features = bottleneck_by_hand(model, model.backbone(torch.cat([source, target])))
    source_logits, target_logits = source_and_target_logits(model, features, domains, count)
    cross_entropy = -F.log_softmax(source_logits, dim=1)[torch.arange(count), labels].mean()
    g = torch.cat([F.softmax(source_logits, 1), F.softmax(target_logits, 1)]).detach()
    if randomized:
        mapping = model.method.mapping
        width = mapping.feature_matrix.shape[1]
        mapped = (features @ mapping.feature_matrix) * (g @ mapping.class_matrix) / math.sqrt(width)
    else:
        mapped = torch.cat([g[:, c : c + 1] * features for c in range(g.shape[1])], dim=1)
    logits = discriminator_by_hand(model, mapped)
    is_source = torch.cat([torch.ones(count), torch.zeros(len(target))])
    per_sample = -(is_source * F.logsigmoid(logits) + (1 - is_source) * F.logsigmoid(-logits))
    if entropy:
        entropies = -(g * torch.log(g + 1e-5)).sum(dim=1)
        weights = 1 + torch.exp(-entropies)
        weights = weights / weights.sum() * len(weights)
        assert float(weights.sum()) == pytest.approx(len(g))
        per_sample = weights * per_sample
    return cross_entropy, per_sample.mean()


@pytest.mark.parametrize(
    ("entropy", "randomized"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_the_loss_equals_an_independent_computation(entropy: bool, randomized: bool) -> None:
    weight = 0.7
    kwargs = {**SMALL, "weight": weight, "entropy": entropy, "randomized": randomized}
    model = tiny_model("cdan", kwargs)
    model.train()
    batch = adaptation_batch(3)
    output = model.method.training_loss(model, training_batch(batch))
    cross_entropy, transfer = independent_terms(model, batch, entropy, randomized)
    torch.testing.assert_close(output.loss, cross_entropy + weight * transfer)
    torch.testing.assert_close(output.metrics["domain_loss"], transfer)


def test_the_grl_counts_training_steps_and_its_weight_follows_the_schedule() -> None:
    model = tiny_model("cdan", SMALL)
    model.train()
    model.method.grl_steps.fill_(999)
    weights = []
    for seed in range(3):
        output = model.method.training_loss(model, training_batch(adaptation_batch(seed)))
        weights.append(output.metrics["adaptation_weight"])
    assert int(model.method.grl_steps) == 1002
    assert weights == pytest.approx([2 / (1 + math.exp(-i / 1000)) - 1 for i in (999, 1000, 1001)])


def test_the_transfer_gradient_is_reversed_into_the_network_and_not_into_the_heads() -> None:
    """d loss = d CE - lambda d BCE for the backbone and the bottleneck, d CE for the heads
    (g is detached), d BCE for the discriminator (it descends its loss)."""
    model = tiny_model("cdan", {**SMALL, "weight": 1.0})
    model.train()
    model.method.grl_steps.fill_(1500)
    coefficient = 2 / (1 + math.exp(-1.5)) - 1
    batch = adaptation_batch(4)
    network = [*model.backbone.parameters(), *model.method.bottleneck.parameters()]
    heads = list(model.head.parameters())
    discriminator = list(model.method.discriminator.parameters())
    everything = network + heads + discriminator

    def gradients(loss):
        grads = torch.autograd.grad(loss, everything, allow_unused=True, retain_graph=True)
        return [
            torch.zeros_like(p) if g is None else g for p, g in zip(everything, grads, strict=True)
        ]

    output = model.method.training_loss(model, training_batch(batch))
    full = gradients(output.loss)
    cross_entropy, transfer = independent_terms(model, batch, entropy=False, randomized=False)
    by_ce, by_transfer = gradients(cross_entropy), gradients(transfer)

    def flat(grads, start, stop):  # one vector per part: tolerances relative to its largest entry
        return [torch.cat([g.flatten() for g in grads[start:stop]])]

    first_head, first_discriminator = len(network), len(network) + len(heads)
    network_part = (0, first_head)
    heads_part = (first_head, first_discriminator)
    discriminator_part = (first_discriminator, len(everything))
    assert float(flat(by_transfer, *network_part)[0].abs().sum()) > 0
    reversed_total = (
        flat(by_ce, *network_part)[0] - coefficient * flat(by_transfer, *network_part)[0]
    )
    assert_same_gradients(flat(full, *network_part), [reversed_total])
    assert float(flat(by_transfer, *heads_part)[0].abs().sum()) == 0.0
    assert_same_gradients(flat(full, *heads_part), flat(by_ce, *heads_part))
    assert_same_gradients(flat(full, *discriminator_part), flat(by_transfer, *discriminator_part))


def test_the_heads_read_the_bottleneck_in_evaluation_and_the_groups_hold_it() -> None:
    model = tiny_model("cdan", SMALL)
    fit(model, [adaptation_batch(0)], 1)  # running statistics of the bottleneck's BatchNorm
    model.eval()
    images = adaptation_batch(9)["source"][0]
    domains = torch.zeros(len(images), dtype=torch.long)
    with torch.no_grad():
        linear, norm = model.method.bottleneck[0], model.method.bottleneck[1]
        hidden = model.backbone(images) @ linear.weight.t() + linear.bias
        hidden = (hidden - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        features = torch.relu(hidden * norm.weight + norm.bias)
        torch.testing.assert_close(model(images, domains), model.head.heads["Art"](features))
    assert float(norm.running_mean.abs().sum()) > 0
    groups = {group["name"]: group for group in model.parameter_groups()}
    assert groups["bottleneck"]["lr_multiplier"] == groups["discriminator"]["lr_multiplier"] == 1
    assert len(groups["bottleneck"]["params"]) == 4


def test_refused_without_target_domains() -> None:
    model = tiny_model("cdan", SMALL)
    data = SimpleNamespace(batch_size=8, eval_batch_size=8, target_domains=[])
    with pytest.raises(ValueError, match=r"'cdan' adapts to unlabelled target domains"):
        check_settings(model, data)
    batch = training_batch(adaptation_batch(0))
    batch.target_images = None
    with pytest.raises(ValueError, match=r"cdan needs unlabelled target images.*target_domains"):
        model.method.training_loss(model, batch)


def test_a_tiny_cdan_e_fit_learns_the_source_and_transfers_to_the_target() -> None:
    """30 steps on synthetic Art + Clipart with Product unlabelled; the GRL's count starts at
    3000 so that the adversarial term is on (lambda ~0.9) within so short a fit."""
    train = [adaptation_batch(seed) for seed in range(6)]
    model = tiny_model(
        "cdan",
        {"bottleneck_dim": 32, "hidden_features": 16, "entropy": True},
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    )
    model.method.grl_steps.fill_(3000)
    losses = fit(model, train, 5)
    assert sum(losses[-6:]) < sum(losses[:6]), losses
    assert int(model.method.grl_steps) == 3030
    source, target = accuracies(model, [adaptation_batch(seed) for seed in range(100, 104)])
    assert source >= 0.75 and target >= 0.6, (source, target)  # chance: 1/3


def test_kill_and_resume_keeps_the_counter_the_random_matrices_and_the_lr_decay(tmp_path) -> None:
    def state(model):
        method = model.method
        return [method.grl_steps, method.mapping.feature_matrix, method.mapping.class_matrix]

    assert_resume_is_seamless(
        tmp_path,
        "cdan",
        {**SMALL, "randomized": True, "randomized_dim": 12},
        state,
        lr_scheduler=lambda optimizer: InverseDecayLR(optimizer, gamma=0.5),
    )


@pytest.mark.slow
def test_cdan_through_the_cli_with_the_overlay(tmp_path, mlflow_uri) -> None:
    """The overlay's TLlib recipe on the tiny demo, Art -> Clipart: the per-step inverse decay,
    the GRL counter and the domain metrics."""
    from experiments.officehome import main
    from tests.helpers.cli import tiny_args
    from tests.helpers.paths import REPO

    cli = main(
        [
            "fit",
            *tiny_args(
                tmp_path,
                "--config",
                str(REPO / "configs/adaptation/cdan_e.yaml"),
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
    model = cli.model
    steps = cli.trainer.global_step
    assert steps > 2 and int(model.method.grl_steps) == steps
    assert model.method.entropy and model.method.bottleneck_dim == 256
    heads = next(g for g in cli.trainer.optimizers[0].param_groups if g["name"] == "heads")
    assert heads["lr"] == pytest.approx(0.01 * (1 + 0.001 * steps) ** -0.75)
    metrics = MlflowClient(mlflow_uri).get_run(cli.trainer.logger.run_id).data.metrics
    assert "train/domain_acc_epoch" in metrics and "val/acc/Clipart" in metrics
    assert metrics["train/adaptation_weight_epoch"] > 0
