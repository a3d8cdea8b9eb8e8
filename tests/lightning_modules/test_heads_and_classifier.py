from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.cli import StylebenchCLI
from lightning_modules.metrics import (
    DomainAccuracy,
    per_class_accuracy,
    summarize_domains,
)
from lightning_modules.models.heads import MultiDomainHead
from lightning_modules.names import metric_safe_name


def test_metric_safe_name_is_consistent() -> None:
    assert metric_safe_name("Real World") == "Real_World"
    assert metric_safe_name("Real_World") == "Real_World"
    assert metric_safe_name("photos (new cam) v1.2") == "photos_new_cam_v1_2"
    with pytest.raises(ValueError):
        metric_safe_name("  ")


def test_each_sample_goes_through_its_own_domains_head() -> None:
    torch.manual_seed(0)
    head = MultiDomainHead(8, 3, ["Art", "Real World"])
    features = torch.randn(4, 8)
    domains = torch.tensor([0, 1, 1, 0])
    logits = head(features, domains)
    art, real = head.heads["Art"], head.heads["Real_World"]
    expected = torch.stack(
        [art(features[0]), real(features[1]), real(features[2]), art(features[3])]
    )
    torch.testing.assert_close(logits, expected)


def test_unseen_domain_uses_mean_of_head_probabilities() -> None:
    torch.manual_seed(0)
    head = MultiDomainHead(
        8, 3, ["Art", "Clipart", "Product"], trained_domains=["Clipart", "Product"]
    )
    features = torch.randn(5, 8)
    unseen = torch.zeros(5, dtype=torch.long)  # Art has no head
    probabilities = head(features, unseen).softmax(dim=1)
    expected = (
        head.heads["Clipart"](features).softmax(1) + head.heads["Product"](features).softmax(1)
    ) / 2
    torch.testing.assert_close(probabilities, expected)


def test_unseen_domain_uses_shared_head_when_present() -> None:
    head = MultiDomainHead(8, 3, ["Art", "Clipart"], trained_domains=["Clipart"], shared_head=True)
    features = torch.randn(2, 8)
    torch.testing.assert_close(head(features, torch.tensor([0, 0])), head.shared(features))


def test_domain_accuracy_counts_per_domain_and_summary_uses_trained_domains() -> None:
    metric = DomainAccuracy(["A", "B", "C"], num_classes=2)
    metric.update(
        torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0, 1, 0, 0, 0]), torch.tensor([0, 0, 1, 2, 2])
    )
    matrices = metric.confusion_matrices()
    assert {n: int(m.sum()) for n, m in matrices.items()} == {"A": 2, "B": 1, "C": 2}
    accuracies = {n: (m.diagonal().sum() / m.sum()).item() for n, m in matrices.items()}
    assert accuracies == {"A": 1.0, "B": 0.0, "C": 0.5}
    summary = summarize_domains(accuracies, trained_domains=["A", "B"])
    assert summary == {"acc_mean": 0.5, "acc_worst": 0.0, "acc_held_out_mean": 0.5}
    per_class = per_class_accuracy(matrices["C"])
    assert per_class[0].item() == 0.5 and torch.isnan(per_class[1])  # class 1 has no sample


def build_model(**kwargs) -> MultiDomainClassifier:
    defaults = dict(
        backbone="resnet20",
        recalibration="srm",
        num_classes=3,
        domain_names=["A", "B"],
        image_size=32,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, weight_decay=1e-4),
    )
    return MultiDomainClassifier(**{**defaults, **kwargs})


def test_recalibration_parameters_are_exempt_from_weight_decay_by_default() -> None:
    model = build_model()
    optimizer = model.configure_optimizers()
    groups = {group["name"]: group for group in optimizer.param_groups}
    exempt_ids = {id(p) for p in groups["backbone_no_weight_decay"]["params"]}
    named = dict(model.backbone.named_parameters())
    expected = {id(named[name]) for name in model.backbone.no_weight_decay()}
    assert exempt_ids == expected and expected
    assert groups["backbone_no_weight_decay"]["weight_decay"] == 0.0
    assert groups["backbone"]["weight_decay"] == 1e-4
    # every parameter is in exactly one group
    all_ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())

    decayed = build_model(recalibration_weight_decay=True).configure_optimizers()
    assert "backbone_no_weight_decay" not in {g["name"] for g in decayed.param_groups}


def test_backbone_learning_rate_multiplier() -> None:
    optimizer = build_model(backbone_lr_multiplier=0.1).configure_optimizers()
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["heads"] == pytest.approx(0.1)
    assert lrs["backbone"] == pytest.approx(0.01)


def test_non_positive_learning_rate_is_a_clear_error() -> None:
    model = build_model(optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    with pytest.raises(ValueError, match="must be positive"):
        model.configure_optimizers()


def test_the_private_batchnorm_base_the_classifier_averages_still_exists() -> None:
    # MultiDomainClassifier averages running statistics of every `_BatchNorm` over DDP ranks;
    # torch has no public common base of BatchNorm1d/2d/3d and SyncBatchNorm.
    base = torch.nn.modules.batchnorm._BatchNorm
    for layer in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm):
        assert issubclass(layer, base)


def test_recalibration_kwargs_reach_every_module_and_name_the_variant() -> None:
    model = build_model(recalibration_kwargs={"pooling": "avg", "fused": False, "gate_init": 0.1})
    modules = model.backbone.recalibration_modules().values()
    assert len(modules) == 9
    assert all((m.pooling, m.fused) == ("avg", False) for m in modules)
    assert all(torch.equal(m.bn.weight, torch.full_like(m.bn.weight, 0.1)) for m in modules)
    # `fused` changes how, not what, SRM computes: not part of the variant.
    assert model.module_options == "gate_init=0.1,pooling=avg"
    assert model.hparams.recalibration_kwargs == {
        "pooling": "avg",
        "fused": False,
        "gate_init": 0.1,
    }
    assert build_model().module_options == ""


def test_a_wrong_module_option_fails_when_the_model_is_built() -> None:
    with pytest.raises(
        ValueError, match=r"'se' \(SqueezeExcite\) has no option 'ratio'.*reduction=16"
    ):
        build_model(recalibration="se", recalibration_kwargs={"ratio": 8})


def test_run_name_carries_the_module_variant() -> None:
    """`<backbone>-<module>[<options>]-<protocol>`; the defaults keep the plain name."""

    def run_name(model: MultiDomainClassifier, subcommand: str = "fit") -> str:
        cli = SimpleNamespace(
            model=model, datamodule=SimpleNamespace(protocol="multi_domain"), subcommand=subcommand
        )
        return StylebenchCLI.run_name(cli)

    assert run_name(build_model()) == "resnet20-srm-multi_domain"
    variant = build_model(recalibration="se", recalibration_kwargs={"reduction": 4})
    assert run_name(variant) == "resnet20-se[reduction=4]-multi_domain"
    assert run_name(variant, "test") == "resnet20-se[reduction=4]-multi_domain-test"
