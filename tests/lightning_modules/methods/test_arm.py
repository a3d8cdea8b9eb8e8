"""ARM-CML: the context channel against the context network written here from its weights
(F.conv2d, F.batch_norm) and averaged over the training domains or evaluation groups; the first
convolution's copied (pretrained) weights in ResNets and DenseNets; the context network in the
optimizer (unlike DomainBed); a tiny fit that learns and trains it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.methods import TrainingBatch
from lightning_modules.methods.arm import first_convolution
from lightning_modules.models.backbones import create_backbone
from tests.helpers.manual_methods import tiny_fit, tiny_model


def context_by_hand(net: nn.Module, images: torch.Tensor, training: bool) -> torch.Tensor:
    """Three 5x5 convolutions (padding 2), BatchNorm (batch statistics in training, running
    ones in evaluation) and ReLU after the first two."""
    conv1, bn1, _, conv2, bn2, _, conv3 = net.layers
    x = images
    for conv, bn in ((conv1, bn1), (conv2, bn2)):
        x = F.conv2d(x, conv.weight, conv.bias, padding=2)
        x = F.batch_norm(
            x,
            None if training else bn.running_mean,
            None if training else bn.running_var,
            bn.weight,
            bn.bias,
            training=training,
            eps=bn.eps,
        )
        x = F.relu(x)
    return F.conv2d(x, conv3.weight, conv3.bias, padding=2)


def backbone_input(model, images: torch.Tensor, run) -> torch.Tensor:
    """What the backbone's first convolution read while `run()` ran."""
    seen = []
    hook = model.backbone.conv1.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        run()
    finally:
        hook.remove()
    return seen[0]


def test_in_training_each_domains_images_share_their_mean_context() -> None:
    model = tiny_model("arm")
    model.train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(7, 3, 16, 16, generator=generator)
    domains = torch.tensor([1, 0, 1, 1, 0, 1, 0])  # any order, groups of 3 and 4
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        context = context_by_hand(model.method.context_net, images, training=True)
    expected = torch.empty_like(context)
    for domain in (0, 1):
        rows = domains == domain
        expected[rows] = context[rows].mean(0, keepdim=True)
    seen = backbone_input(
        model,
        images,
        lambda: model.method.training_loss(model, TrainingBatch(images, labels, domains)),
    )
    torch.testing.assert_close(seen, torch.cat([images, expected], dim=1))


@pytest.mark.parametrize(("batch", "support_size", "groups"), [(16, 8, 2), (12, 8, 1), (12, 4, 3)])
def test_in_evaluation_groups_are_consecutive_images_or_the_whole_batch(
    batch: int, support_size: int, groups: int
) -> None:
    model = tiny_model("arm", {"support_size": support_size})
    net = model.method.context_net
    for bn in (net.layers[1], net.layers[4]):  # running statistics other than 0 and 1
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    images = torch.randn(batch, 3, 16, 16)
    with torch.no_grad():
        context = context_by_hand(net, images, training=False)
        size = batch // groups
        expected = torch.cat(
            [
                context[g * size : (g + 1) * size].mean(0, keepdim=True).expand(size, -1, -1, -1)
                for g in range(groups)
            ]
        )
        seen = backbone_input(model, images, lambda: model(images, torch.zeros(batch).long()))
    torch.testing.assert_close(seen, torch.cat([images, expected], dim=1))


def test_the_first_convolution_copies_the_pretrained_channel_i_mod_3(tmp_path) -> None:
    torch.manual_seed(7)
    pretrained = create_backbone("resnet20", recalibration="none", image_size=16)
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.pt")
    model = tiny_model("arm", weights=str(tmp_path / "pretrained.pt"))
    weight = model.backbone.conv1.weight
    assert weight.shape[1] == 4 and model.backbone.conv1.bias is None
    for channel in range(4):
        torch.testing.assert_close(weight[:, channel], pretrained.conv1.weight[:, channel % 3])


def test_a_densenet_gets_its_conv0_widened_and_other_backbones_are_refused() -> None:
    model = tiny_model("arm", backbone="densenet_bc_100")
    conv = model.backbone.features.conv0
    assert conv.in_channels == 4
    torch.testing.assert_close(conv.weight[:, 3], conv.weight[:, 0])
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(8, 3, 16, 16), torch.zeros(8).long()).shape == (8, 3)
    with pytest.raises(ValueError, match=r"`conv1` \(ResNets\) or `features.conv0`.*Linear"):
        first_convolution(nn.Linear(3, 3))


def test_the_context_net_is_in_the_optimizer_in_its_own_group() -> None:
    model = tiny_model("arm", backbone_lr_multiplier=0.1)
    optimizer = model.configure_optimizers()
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["context_net"]["params"] == list(model.method.context_net.parameters())
    assert groups["context_net"]["lr"] == groups["heads"]["lr"] == 1e-3
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)


def test_a_tiny_arm_fit_learns_and_trains_the_context_net() -> None:
    before = [p.detach().clone() for p in tiny_model("arm").method.context_net.parameters()]
    losses, accuracy, model = tiny_fit("arm", epochs=3)
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])
    assert accuracy > 0.6  # chance: 1/3
    after = list(model.method.context_net.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
