"""One classifier for every domain (`domain_heads: false`, `shared_head: true`, DomainBed's ERM):
the head itself, the training loss, and everything that reads the heads (evaluation per domain,
`val/acc_mean`, the cross-domain matrix, shape bias, pruning's evaluation, growing a model)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.analysis.pruning import evaluate_domains
from lightning_modules.callbacks.contracts import DomainHeads, require
from lightning_modules.callbacks.shape_bias import evaluate_shape_bias
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.models.heads import MultiDomainHead
from lightning_modules.style_robustness import CrossDomainAccuracy
from tests.helpers.trainers import quiet_trainer

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step`")

DOMAINS = ["Art", "Clipart", "Product"]
TRAINED = ["Clipart", "Product"]


def shared_only_head() -> MultiDomainHead:
    torch.manual_seed(0)
    return MultiDomainHead(
        8, 3, DOMAINS, trained_domains=TRAINED, shared_head=True, domain_heads=False
    )


def test_the_shared_head_alone_classifies_trained_and_unseen_domains() -> None:
    head = shared_only_head()
    features = torch.randn(6, 8)
    domains = torch.tensor([0, 1, 2, 2, 1, 0])  # Art has no training data
    expected = features @ head.shared.weight.T + head.shared.bias
    torch.testing.assert_close(head(features, domains), expected)
    torch.testing.assert_close(head.unseen_domain_logits(features), expected)
    assert len(head.heads) == 0 and not head.shared_beside_domain_heads
    assert set(head.state_dict()) == {"shared.weight", "shared.bias"}


def test_every_trained_domain_row_of_all_domain_logits_is_the_shared_head() -> None:
    head = shared_only_head()
    features = torch.randn(4, 8)
    rows = head.all_domain_logits(features)
    assert rows.shape == (4, len(TRAINED), 3)
    for row in range(len(TRAINED)):
        torch.testing.assert_close(rows[:, row], head.shared(features))


def test_the_head_setups_and_a_setup_without_a_classifier() -> None:
    per_domain = MultiDomainHead(8, 3, DOMAINS, trained_domains=TRAINED)
    both = MultiDomainHead(8, 3, DOMAINS, trained_domains=TRAINED, shared_head=True)
    assert (list(per_domain.heads), per_domain.shared) == (TRAINED, None)
    assert list(both.heads) == TRAINED and both.shared_beside_domain_heads
    with pytest.raises(ValueError, match=r"domain_heads: false leaves no classifier; set .*"):
        MultiDomainHead(8, 3, DOMAINS, shared_head=False, domain_heads=False)


def tiny_model(**kwargs) -> MultiDomainClassifier:
    torch.manual_seed(0)
    settings = dict(
        backbone="resnet20",
        recalibration="none",
        num_classes=3,
        domain_names=DOMAINS,
        trained_domains=TRAINED,
        image_size=16,
        shared_head=True,
        domain_heads=False,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05),
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def test_training_loss_is_the_shared_heads_cross_entropy_counted_once() -> None:
    model = tiny_model(label_smoothing=0.1)
    features = torch.randn(4, model.backbone.feature_dim)
    labels, domains = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 2, 1])
    shared = features @ model.head.shared.weight.T + model.head.shared.bias
    expected = F.cross_entropy(shared, labels, label_smoothing=0.1)
    for training in (True, False):
        model.train(training)
        loss, logits = model.classification_loss(features, labels, domains)
        torch.testing.assert_close(logits, shared)
        torch.testing.assert_close(loss, expected)
    groups = {group["name"]: group["params"] for group in model.parameter_groups()}
    assert [id(p) for p in groups["heads"]] == [id(p) for p in model.head.shared.parameters()]


def batches(count: int = 4, size: int = 9, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, 3, 16, 16, generator=generator),
            torch.randint(0, 3, (size,), generator=generator),
            torch.arange(size) % 3,
        )
        for _ in range(count)
    ]


def test_fit_and_validation_report_every_domain_and_the_trained_mean() -> None:
    model = tiny_model()
    train = [(x, y, d % 2 + 1) for x, y, d in batches(seed=1)]  # Clipart and Product only
    trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=0)
    before = model.head.shared.weight.detach().clone()
    loader = torch.utils.data.DataLoader
    trainer.fit(
        model,
        train_dataloaders=loader(train, batch_size=None),
        val_dataloaders=loader(batches(seed=2), batch_size=None),
    )
    assert not torch.equal(before, model.head.shared.weight)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # Independent count: each sample through the shared head, per domain.
    model.eval()
    correct, total = torch.zeros(3), torch.zeros(3)
    with torch.no_grad():
        for images, labels, domains in batches(seed=2):
            logits = model.head.shared(model.backbone(images))
            hits = (logits.argmax(dim=1) == labels).float()
            correct.index_add_(0, domains, hits)
            total.index_add_(0, domains, torch.ones_like(hits))
    accuracy = dict(zip(DOMAINS, (correct / total).tolist(), strict=True))
    for name in DOMAINS:
        assert metrics[f"val/acc/{name}"] == pytest.approx(accuracy[name])
    assert metrics["val/acc_mean"] == pytest.approx((accuracy["Clipart"] + accuracy["Product"]) / 2)
    assert metrics["val/acc_held_out_mean"] == pytest.approx(accuracy["Art"])


def test_cross_domain_matrix_rows_are_the_shared_heads_accuracy_per_domain() -> None:
    head = shared_only_head()
    features = torch.randn(30, 8)
    labels = torch.randint(0, 3, (30,))
    domains = torch.arange(30) % 3
    matrix = CrossDomainAccuracy(len(TRAINED), len(DOMAINS))
    matrix.update(head.all_domain_logits(features), labels, domains)
    hits = (head.shared(features).argmax(dim=1) == labels).float()
    per_domain = torch.stack([hits[domains == d].mean() for d in range(3)])
    for row in matrix.compute():
        torch.testing.assert_close(row, per_domain)


def test_shape_bias_classifies_the_stimuli_through_the_shared_head() -> None:
    model = tiny_model(class_names=["circle", "square", "star"]).eval()
    require(model.head, DomainHeads, "test")
    generator = torch.Generator().manual_seed(3)
    pictures = torch.randint(0, 256, (9, 3, 16, 16), dtype=torch.uint8, generator=generator)
    categories = ["circle", "square", "star"]
    images = [
        SimpleNamespace(path=f"/stimuli/{s}/{s}1-{t}1.png", shape=s, texture=t)
        for s in categories
        for t in categories
    ]
    stimuli = SimpleNamespace(
        root=Path("/stimuli"),
        categories=categories,
        images=images,
        dataset=[(pictures[i], i) for i in range(9)],
    )

    def normalize(batch, dataloader_idx: int):
        return (batch[0].float() / 255,)

    result = evaluate_shape_bias(model, stimuli, normalize, batch_size=4)
    with torch.no_grad():
        expected = model.head.shared(model.backbone(pictures.float() / 255)).argmax(dim=1)
    assert [row["predicted"] for row in result.rows] == [categories[i] for i in expected]


def test_pruning_evaluation_counts_every_domain_through_the_shared_head() -> None:
    model = tiny_model().eval()
    evaluated = batches(count=2, seed=4)
    result = evaluate_domains(model, evaluated, lambda batch, index=0: batch, progress=False)
    with torch.no_grad():
        hits = torch.cat(
            [(model.head.shared(model.backbone(x)).argmax(1) == y).float() for x, y, _ in evaluated]
        )
    domains = torch.cat([d for _, _, d in evaluated])
    for index, name in enumerate(DOMAINS):
        assert result[f"acc/{name}"] == pytest.approx(hits[domains == index].mean().item())


def test_growing_a_shared_head_model_keeps_its_backbone_and_classifier(tmp_path: Path) -> None:
    parent = tiny_model()
    with torch.no_grad():
        parent.head.shared.weight.add_(1.0)
    path = tmp_path / "parent.ckpt"
    torch.save({"state_dict": parent.state_dict()}, path)
    grown = tiny_model(
        domain_names=[*DOMAINS, "Sketch"],
        trained_domains=[*TRAINED, "Sketch"],
        init_from_checkpoint=str(path),
    )
    assert grown.grown_heads == [] and len(grown.head.heads) == 0
    torch.testing.assert_close(grown.head.shared.weight, parent.head.shared.weight)
    torch.testing.assert_close(grown.backbone.conv1.weight, parent.backbone.conv1.weight)
