"""The training-methods extension point: registry and options, the hooks every method may use
(its own parameters, stage layers, manual optimisation), and what every registered method must
do on a tiny batch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods import (
    ERM,
    TRAINING_METHODS,
    MethodOutput,
    TrainingBatch,
    TrainingMethod,
    create_method,
    format_method_options,
)
from tests.helpers.trainers import quiet_trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log()`", "ignore:You defined a `validation_step`"
)


def tiny_model(method: str = "erm", method_kwargs=None, **kwargs) -> MultiDomainClassifier:
    torch.manual_seed(0)
    settings = dict(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=3,
        domain_names=["Art", "Clipart", "Product"],
        trained_domains=["Art", "Clipart"],
        image_size=16,
        method=method,
        method_kwargs=method_kwargs,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def tiny_batch(seed: int = 1, target: bool = False) -> TrainingBatch:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 3, (8,), generator=generator)
    domains = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    target_images = torch.randn(4, 3, 16, 16, generator=generator) if target else None
    return TrainingBatch(images, labels, domains, target_images)


def fit(model: MultiDomainClassifier, batches: list, epochs: int = 1) -> MultiDomainClassifier:
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return model


# ----- registry and options ---------------------------------------------------------------------
def test_erm_is_the_default_and_every_registered_name_builds_its_class() -> None:
    assert isinstance(tiny_model().method, ERM)
    for name, cls in TRAINING_METHODS.items():
        assert issubclass(cls, TrainingMethod)
        assert type(create_method(name)) is cls


def test_an_unknown_method_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown training method 'cora'.*valid choices: erm"):
        create_method("cora")


def test_an_unknown_option_names_the_methods_valid_options() -> None:
    with pytest.raises(ValueError, match=r"'dann' \(DANN\) has no option 'wieght'.*weight=1\.0"):
        tiny_model("dann", {"wieght": 0.5})
    with pytest.raises(ValueError, match=r"'erm' \(ERM\) has no option 'lr'; valid options: none"):
        create_method("erm", {"lr": 1.0})


def test_only_options_that_change_the_method_name_the_variant() -> None:
    assert format_method_options("dann", {"weight": 1.0, "hidden_features": 1024}) == ""
    assert format_method_options("dann", {"weight": 0.5}) == "weight=0.5"
    assert tiny_model().variant_name() == "none"
    assert tiny_model("dann", {"weight": 0.5}).variant_name() == "none+dann[weight=0.5]"


# ----- every registered method ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TRAINING_METHODS))
def test_every_method_gives_a_finite_loss_and_gradients_to_the_network_and_its_own_params(
    name: str,
) -> None:
    model = tiny_model(name)
    model.train()
    batch = tiny_batch(target=model.method.needs_target_domains)
    if model.method.manual_optimization:
        pytest.skip("manual methods are tested in their own files")
    output = model.method.training_loss(model, batch)
    assert isinstance(output, MethodOutput) and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    own = [p for group in model.method.parameter_groups() for p in group["params"]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    # every trainable parameter of the method is in one of its groups (so the optimizer has it)
    assert {id(p) for p in model.method.parameters() if p.requires_grad} == {id(p) for p in own}


def test_per_domain_groups_follow_the_domain_order_and_cover_the_batch() -> None:
    batch = tiny_batch()
    batch.domains = torch.tensor([1, 0, 1, 0, 2, 2, 0, 1])
    groups = batch.domain_groups()
    assert [index for index, _ in groups] == [0, 1, 2]
    assert sorted(torch.cat([rows for _, rows in groups]).tolist()) == list(range(8))
    for (index, rows), (images, labels) in zip(groups, batch.per_domain(), strict=True):
        assert bool((batch.domains[rows] == index).all())
        assert torch.equal(images, batch.images[rows]) and torch.equal(labels, batch.labels[rows])


# ----- stage layers -----------------------------------------------------------------------------
class DoubleInTraining(nn.Module):
    """A parameter-free stage layer: doubles the maps in training, identity in evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x * 2 if self.training else x


class StageLayerMethod(ERM):
    def __init__(self, stages: tuple[int, ...] = (1, 2)) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({str(s): DoubleInTraining() for s in stages})

    def stage_layers(self) -> dict[int, nn.Module]:
        return {int(stage): layer for stage, layer in self.layers.items()}


@pytest.mark.parametrize(
    ("backbone", "channels"), [("resnet20", [16, 16, 32, 64]), ("densenet_bc_100", None)]
)
def test_stage_layers_sit_after_their_stage_and_act_only_in_training(
    monkeypatch: pytest.MonkeyPatch, backbone: str, channels
) -> None:
    monkeypatch.setitem(TRAINING_METHODS, "stage_test", StageLayerMethod)
    model = tiny_model("stage_test", {"stages": (0, 2)}, backbone=backbone)
    plain = tiny_model(backbone=backbone)
    plain.load_state_dict(model.state_dict())  # parameter-free layers: the same keys
    images = torch.randn(2, 3, 16, 16)
    model.eval(), plain.eval()
    torch.testing.assert_close(model.features(images), plain.features(images))
    model.train(), plain.train()
    assert not torch.allclose(model.features(images), plain.features(images))
    stem, second = model.method.layers["0"], model.method.layers["2"]
    if channels is not None:  # a CIFAR ResNet: 16 px stem and stage 1, 8 px stage 2
        assert stem.shapes[-1] == (2, channels[0], 16, 16)
        assert second.shapes[-1] == (2, channels[2], 8, 8)
    # a deep copy (weight averaging copies the model) applies its own copy of each layer
    duplicate = copy.deepcopy(model)
    duplicate.features(images)
    assert len(duplicate.method.layers["2"].shapes) == len(second.shapes) + 1


def test_a_stage_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRAINING_METHODS, "stage_test", StageLayerMethod)
    with pytest.raises(ValueError, match=r"stage 4 does not exist.*valid stages: 0 .* to 3"):
        tiny_model("stage_test", {"stages": (4,)})


# ----- manual optimisation ----------------------------------------------------------------------
class ManualERM(ERM):
    """ERM written as a manual step: what a meta-learning method's step looks like."""

    manual_optimization = True

    def manual_training_step(self, model, batch: TrainingBatch) -> MethodOutput:
        optimizer = model.optimizers()
        optimizer.zero_grad()
        output = self.training_loss(model, batch)
        model.manual_backward(output.loss)
        optimizer.step()
        return output


def test_a_manual_method_steps_itself_and_its_scheduler_like_automatic_erm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(TRAINING_METHODS, "manual_erm", ManualERM)
    schedule = dict(lr_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    batches = [(b.images, b.labels, b.domains) for b in (tiny_batch(seed) for seed in range(3))]
    automatic = fit(tiny_model(**schedule), batches, epochs=2)
    manual = fit(tiny_model("manual_erm", **schedule), batches, epochs=2)
    assert not manual.automatic_optimization
    assert manual.trainer.global_step == automatic.trainer.global_step == 6
    # the scheduler stepped once per epoch in both
    assert manual.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)
    for a, m in zip(automatic.parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(a, m)


# ----- the classification loss the methods share ------------------------------------------------
def test_classification_loss_is_each_samples_head_plus_the_shared_head_in_training() -> None:
    model = tiny_model(shared_head=True, label_smoothing=0.1)
    model.train()
    features = torch.randn(4, model.backbone.feature_dim)
    labels, domains = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 1, 0])
    loss, logits = model.classification_loss(features, labels, domains)
    heads = list(model.head.heads.values())
    own = torch.stack([heads[d](f) for f, d in zip(features, domains.tolist(), strict=True)])
    torch.testing.assert_close(logits, own)
    expected = F.cross_entropy(own, labels, label_smoothing=0.1) + F.cross_entropy(
        model.head.shared(features), labels, label_smoothing=0.1
    )
    torch.testing.assert_close(loss, expected)
    model.eval()
    torch.testing.assert_close(
        model.classification_loss(features, labels, domains)[0],
        F.cross_entropy(own, labels, label_smoothing=0.1),
    )


def test_help_names_every_registered_method_and_documents_every_model_setting(capsys) -> None:
    import inspect

    from experiments.officehome import main

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "MultiDomainClassifier"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in TRAINING_METHODS)
    settings = list(inspect.signature(MultiDomainClassifier.__init__).parameters)[1:]
    for setting in settings:
        # each setting's line carries its docstring before the type, not the type alone
        entry = text.split(f"--model.{setting} ")[-1].split("(type:")[0]
        assert len(entry.split()) > 3, f"--model.{setting} has no help text: {entry!r}"
