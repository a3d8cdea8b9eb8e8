"""DomainBed's DANN/CDANN update written by hand (the MLP from its weights, the penalty with
torch.autograd.grad, the alternation, two Adams), and the check of a fit against it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.manual_methods import (
    KeepStates,
    fit,
    synthetic_batches,
    tiny_model,
)

# The network's Adam with a larger eps than 1e-8: g / (|g| + eps) would turn float rounding of
# gradients near 1e-8 into visible differences.
LR, EPS = 1e-3, 1e-4
SETTINGS = dict(
    dann_lambda=0.7,
    grad_penalty=0.5,
    beta1=0.0,
    mlp_width=16,
    mlp_depth=4,
    lr_d=2e-3,
    weight_decay_d=0.01,
)


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=LR, eps=EPS)


def mlp_by_hand(discriminator, x: torch.Tensor, depth: int, width: int) -> torch.Tensor:
    """DomainBed's MLP from its weights: linear and ReLU (dropout 0) but after the last."""
    layers = [discriminator.input, *discriminator.hiddens, discriminator.output]
    assert len(layers) == depth and [layer.out_features for layer in layers[:-1]] == [width] * (
        depth - 1
    )
    for layer in layers[:-1]:
        x = F.relu(F.linear(x, layer.weight, layer.bias))
    return F.linear(x, layers[-1].weight, layers[-1].bias)


def domainbed_updates_by_hand(
    reference,
    batches,
    states: list[dict],
    domain_labels: dict[int, int],
    conditional: bool,
    k: int,
    **settings,
) -> tuple[list[float], str]:
    """DomainBed's AbstractDANN.update on each batch, with its two Adams kept across batches:
    (losses, 'd'/'g' per step). Each update starts from the fit's weights before that step
    (`states[step]`) and must end at the fit's weights after it (`states[step + 1]`): from
    weights equal to float rounding, a ReLU at its kink can make the next gradients differ
    visibly, so errors are not left to compound over steps."""
    settings = {**SETTINGS, **settings}
    reference.train()
    backbone, head, method = reference.backbone, reference.head, reference.method
    betas = (settings["beta1"], 0.9)
    generator = torch.optim.Adam(
        [*backbone.parameters(), *head.parameters()], lr=LR, betas=betas, eps=EPS
    )
    own = [*method.discriminator.parameters()]
    if conditional:
        own += list(method.class_embeddings.parameters())
    discriminator = torch.optim.Adam(
        own, lr=settings["lr_d"], weight_decay=settings["weight_decay_d"], betas=betas
    )
    losses, kinds = [], ""
    for count, (images, labels, domains) in enumerate(batches, start=1):
        reference.load_state_dict(states[count - 1])  # in place: the Adams keep their tensors
        targets = torch.tensor([domain_labels[d] for d in domains.tolist()])
        features = backbone(images)
        disc_input = features + method.class_embeddings.weight[labels] if conditional else features
        logits = mlp_by_hand(
            method.discriminator, disc_input, settings["mlp_depth"], settings["mlp_width"]
        )
        per_sample = -logits.log_softmax(1)[torch.arange(len(labels)), targets]
        if conditional:  # sum_i CE_i / (n_{y_i} K), K = largest label + 1
            classes = int(labels.max()) + 1
            counts = torch.stack([(labels == c).sum() for c in range(classes)])
            disc_loss = sum(
                per_sample[i] / (counts[labels[i]] * classes) for i in range(len(labels))
            )
        else:
            disc_loss = per_sample.mean()
        (input_grad,) = torch.autograd.grad(per_sample.sum(), disc_input, create_graph=True)
        disc_loss = disc_loss + settings["grad_penalty"] * (input_grad**2).sum(1).mean()
        if count % (1 + k) < k:
            discriminator.zero_grad()
            disc_loss.backward()
            discriminator.step()
            losses.append(disc_loss.item())
            kinds += "d"
        else:
            loss = F.cross_entropy(head(features, domains), labels)
            loss = loss - settings["dann_lambda"] * disc_loss
            discriminator.zero_grad()
            generator.zero_grad()
            loss.backward()
            generator.step()
            losses.append(loss.item())
            kinds += "g"
        for key, value in reference.state_dict().items():
            if key != "method.update_count":  # the loop counts in `count`
                torch.testing.assert_close(states[count][key], value, rtol=1e-4, atol=1e-6)
    return losses, kinds


def check_against_domainbed(method: str, k: int, expected_kinds: str, **settings) -> None:
    """Fit 3 batches of the training domains Art and Product (domain indices 0 and 2) and
    compare the losses and every weight with the hand-written updates."""
    options = {**SETTINGS, **settings, "d_steps_per_g_step": k}
    model = tiny_model(method, options, trained_domains=["Art", "Product"], optimizer=adam)
    reference = copy.deepcopy(model)
    states = [copy.deepcopy(model.state_dict())]
    batches = [(x, y, d * 2) for x, y, d in synthetic_batches(3, per_domain=6)]
    losses = fit(model, batches, callbacks=[KeepStates(states)])
    assert model.trainer.global_step == 3 and int(model.method.update_count) == 3
    expected, kinds = domainbed_updates_by_hand(
        reference, batches, states, {0: 0, 2: 1}, method == "cdann", k, **settings
    )
    assert kinds == expected_kinds
    assert losses == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the discriminator stepped (and only in its steps: the comparisons in the loop)
    start = tiny_model(method, options, trained_domains=["Art", "Product"])
    assert not torch.equal(
        start.method.discriminator.input.weight, model.method.discriminator.input.weight
    )
