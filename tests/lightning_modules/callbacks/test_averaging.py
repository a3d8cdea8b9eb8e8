"""Weight averaging callbacks: EMA against an EMA computed here from the recorded weights, SWAD's
loss valley against indices worked out by hand from the paper's rules, SWAD's final weights
against the mean of the recorded segments, the trained-domain validation loss, kill-and-resume,
manual optimisation (how `global_step` advances), and CLI fits whose checkpoint holds the
averaged weights."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint, WeightAveraging
from torch import nn
from torch.optim.swa_utils import AveragedModel

from experiments.officehome import main as officehome_main
from lightning_modules.callbacks.averaging import EMA, SWAD, module_tensors
from lightning_modules.callbacks.loss_valley import LossValley
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods import ERM, TRAINING_METHODS, MethodOutput, TrainingBatch
from tests.helpers.cli import tiny_args
from tests.helpers.configs import resolved
from tests.helpers.trainers import quiet_trainer

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:.*LightningModule.configure_model",
    "ignore:The number of training batches",
    "ignore:You're resuming from a checkpoint that ended",
    "ignore:You defined a `validation_step` but have no `val_dataloader`",
    "ignore:You are trying to `self.log()`",
    "ignore:Be aware that when using `ckpt_path`",
)


# A validation-loss sequence and what the paper's rules make of it (n_converge 3, n_tolerance
# 6, tolerance_ratio 0.3), worked out by hand:
# - evaluations 2-4: the oldest of the last three is not their lowest (5>3, 4>2, 3>2);
# - evaluation 5: [2.0, 2.5, 2.2], the oldest is lowest: the valley starts at segment 3,
#   threshold 1.3 * 6.7 / 3 = 2.9033;
# - evaluations 6, 7: the last six still reach back before segment 3: wait;
# - evaluations 8-14: segment k-5 joins (each window's lowest is <= 2.9033);
# - evaluation 15: the last six are [3.0, 3.2, 3.1, 3.3, 3.4, 3.5], all above: the valley
#   ends at segment 9 (segments 3..9) and training stops.
SCRIPT = [5.0, 4.0, 3.0, 2.0, 2.5, 2.2, 2.4, 2.1, 2.3, 2.6, 3.0, 3.2, 3.1, 3.3, 3.4, 3.5]
SCRIPT_START, SCRIPT_THRESHOLD, SCRIPT_DEATH, SCRIPT_VALLEY = 3, 1.3 * 6.7 / 3, 15, range(3, 10)


def test_lightnings_private_weight_averaging_members_still_exist() -> None:
    """EMA and SWAD read and reset the average Lightning's WeightAveraging keeps (no public
    accessor): `_average_model` (a torch AveragedModel with `n_averaged`) and
    `_latest_update_step`."""
    callback = WeightAveraging()
    assert callback._average_model is None and callback._latest_update_step == 0
    callback.setup(make_trainer(), Tiny(), "fit")
    assert isinstance(callback._average_model, AveragedModel)
    assert int(callback._average_model.n_averaged) == 0


# ----- the loss valley, by hand ------------------------------------------------------------------
def test_the_valley_starts_grows_and_ends_where_the_papers_rules_say() -> None:
    valley = LossValley(n_converge=3, n_tolerance=6, tolerance_ratio=0.3)
    joined = {}
    for evaluation, loss in enumerate(SCRIPT):
        joined[evaluation] = list(valley.observe(loss))
        if evaluation < 5:
            assert not valley.converged
    assert valley.start == SCRIPT_START
    assert valley.threshold == pytest.approx(SCRIPT_THRESHOLD)
    assert {e: j for e, j in joined.items() if j} == {k: [k - 5] for k in range(8, 15)}
    assert valley.dead and valley.stop == 10
    # a dead valley ignores later losses and flushes nothing
    assert list(valley.observe(0.1)) == [] and list(valley.flush()) == []
    assert valley.first_needed() == len(valley.losses)


def test_at_the_end_queued_segments_join_up_to_the_last_one_within_the_threshold() -> None:
    valley = LossValley()
    for loss in SCRIPT[:12]:  # training ends after evaluation 11: segments 3..6 have joined
        valley.observe(loss)
    assert (valley.start, valley.stop, valley.dead) == (3, 7, False)
    # queued: 7..11 with losses 2.1, 2.3, 2.6, 3.0, 3.2; 2.6 is the last within 2.9033
    assert list(valley.flush()) == [7, 8, 9]
    assert valley.stop == 7  # flush decides, it does not change the valley
    assert valley.first_needed() == 7


def test_before_convergence_only_the_next_windows_segments_are_kept() -> None:
    valley = LossValley()
    for loss in (5.0, 4.0, 3.0, 2.0):
        assert list(valley.observe(loss)) == []
    assert not valley.converged and list(valley.flush()) == []
    assert valley.first_needed() == 2  # the next window is segments 2, 3, 4


def test_valley_settings_are_checked_and_resumed_only_with_the_same_settings() -> None:
    with pytest.raises(ValueError, match="n_converge=0"):
        LossValley(n_converge=0)
    with pytest.raises(ValueError, match=r"tolerance_ratio=-0\.1"):
        LossValley(tolerance_ratio=-0.1)
    valley = LossValley()
    for loss in SCRIPT[:9]:
        valley.observe(loss)
    copy = LossValley()
    copy.load_state_dict(valley.state_dict())
    assert copy == valley
    with pytest.raises(ValueError, match=r"tolerance_ratio=0\.3 differs"):
        LossValley(tolerance_ratio=0.2).load_state_dict(valley.state_dict())


# ----- a tiny model whose validation loss is scripted -------------------------------------------
def scripted_logits(loss: float) -> torch.Tensor:
    """Two-class logits whose cross-entropy for label 0 is `loss`."""
    return torch.tensor([-math.log(math.expm1(loss)), 0.0])


class Tiny(pl.LightningModule):
    """Linear - BatchNorm - linear over 2 classes; domains A, B trained, C held out. With a
    `script`, validation i returns logits whose trained-domain loss is script[i]: domain A at
    loss+1 (1 image), B at loss-1 (3 images), C at 50; the mean over images would differ."""

    def __init__(self, script: list[float] | None = None, val_every: int = 2) -> None:
        super().__init__()
        self.domain_names, self.trained_domains = ["A", "B", "C"], ["A", "B"]
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        self.script, self.val_every = script, val_every

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self.net(images), labels)

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels, domains = batch
        if self.script is None:
            logits = self.net(images)
        else:
            loss = self.script[self.global_step // self.val_every - 1]
            per_domain = {0: loss + 1, 1: loss - 1, 2: 50.0}
            logits = torch.stack([scripted_logits(per_domain[int(d)]) for d in domains])
        return {"logits": logits, "labels": labels, "domains": domains}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.5)


def train_batches(count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,), generator=generator))
        for _ in range(count)
    ]


VAL_BATCH = (torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 1, 1, 2]))


class Recorder(pl.Callback):
    """The model's parameters and buffers after every training batch."""

    def __init__(self) -> None:
        self.weights: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append([t.detach().clone() for t in module_tensors(pl_module)])


def make_trainer(tmp_path: Path | None = None, **settings) -> pl.Trainer:
    return quiet_trainer(**{"num_sanity_val_steps": 0, "default_root_dir": tmp_path, **settings})


def loader(batches: list) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(batches, batch_size=None)


def mean_of(tensors: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Element-wise mean of weight lists (integer tensors: the last one's)."""
    return [
        torch.stack(group).mean(0) if group[0].is_floating_point() else group[-1]
        for group in zip(*tensors, strict=True)
    ]


def assert_weights_equal(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Equal floating-point tensors (the integer `num_batches_tracked` is not an average)."""
    for a, e in zip(actual, expected, strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(a, e.to(a.dtype))


class Uncopyable:
    def __deepcopy__(self, memo):
        raise RuntimeError("deep-copied")


@pytest.mark.filterwarnings("ignore:SWAD")
@pytest.mark.parametrize("callback", [EMA, SWAD])
def test_the_averaged_copy_shares_the_models_factories(callback) -> None:
    """As the CLI's optimizer factory holds the whole CLI (and an MLflow client that cannot be
    deep-copied), the average's copy of the model shares the model's callables."""
    model, averaging = Tiny(), callback()
    factory = functools.partial(torch.optim.SGD, lr=0.1)
    factory.reaches = Uncopyable()
    model.optimizer_factory = factory
    make_trainer(max_steps=1, callbacks=[averaging], limit_val_batches=0).fit(
        model, loader(train_batches())
    )
    assert model.optimizer_factory is factory
    assert averaging._average_model.module.optimizer_factory is factory
    assert averaging._average_model.module.net is not model.net


def test_one_averaging_callback_per_trainer() -> None:
    trainer = make_trainer(max_steps=1, callbacks=[EMA(), SWAD()], limit_val_batches=0)
    with pytest.raises(ValueError, match=r"has EMA and SWAD.*keep one"):
        trainer.fit(Tiny(), loader(train_batches()))


class EvaluatedWeights(pl.Callback):
    """The model's first weight when each validation or test starts (after the averaging
    callbacks' own hooks: this one comes last)."""

    def __init__(self) -> None:
        self.seen: dict[str, torch.Tensor] = {}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.seen[f"validate-{trainer.state.fn.value}"] = pl_module.net[0].weight.detach().clone()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.seen["test"] = pl_module.net[0].weight.detach().clone()


@pytest.mark.parametrize("callback", [EMA, SWAD])
def test_testing_a_checkpoint_after_fit_evaluates_its_averaged_weights(
    callback, tmp_path: Path
) -> None:
    """Lightning's WeightAveraging would load `current_model_state` (the trained weights) into
    the model when the same trainer tests a checkpoint after fit."""
    model, evaluated = Tiny(SCRIPT, val_every=2), EvaluatedWeights()
    model.test_step = model.validation_step
    averaging = callback(decay=0.5) if callback is EMA else callback()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="{step}", save_top_k=-1)
    trainer = make_trainer(
        max_steps=24,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        enable_checkpointing=True,
        callbacks=[averaging, checkpoints, evaluated],
    )
    trainer.fit(model, loader(train_batches()), loader([VAL_BATCH]))
    # an early checkpoint: the last average differs from its
    early = str(tmp_path / "step=4.ckpt")
    first = torch.load(early, weights_only=True)
    expected = first["state_dict"]["net.0.weight"]
    assert not torch.equal(expected, first["current_model_state"]["net.0.weight"])
    trainer.test(model, loader([VAL_BATCH]), ckpt_path=early)
    torch.testing.assert_close(evaluated.seen["test"], expected)
    trainer.validate(model, loader([VAL_BATCH]), ckpt_path=early)
    torch.testing.assert_close(evaluated.seen["validate-validate"], expected)


# ----- EMA -------------------------------------------------------------------------------------
def independent_ema(weights: list[list[torch.Tensor]], decay: float, every: int, start: int):
    """avg <- d*avg + (1-d)*w after optimizer step i (0-based) if i >= start and i % every == 0;
    the first update copies w."""
    average = None
    for step, current in enumerate(weights):
        if step >= start and step % every == 0:
            if average is None:
                average = [t.clone() for t in current]
            else:
                average = [
                    decay * a + (1 - decay) * w for a, w in zip(average, current, strict=True)
                ]
    return average


def test_ema_equals_an_ema_of_the_recorded_weights_with_lightnings_start_and_every_n() -> None:
    model, recorder = Tiny(), Recorder()
    ema = EMA(decay=0.7, update_every_n_steps=2, update_starting_at_step=3)
    make_trainer(max_epochs=3, callbacks=[recorder, ema], limit_val_batches=0).fit(
        model, loader(train_batches())
    )
    assert len(recorder.weights) == 12
    expected = independent_ema(recorder.weights, 0.7, every=2, start=3)
    assert_weights_equal(list(module_tensors(ema._average_model.module)), expected)
    # training ends with the average in the model
    assert_weights_equal(list(module_tensors(model)), expected)
    assert not torch.equal(expected[0], recorder.weights[-1][0])


class TwoOptimizerMethod(ERM):
    """Manual optimisation with two optimizers stepped every batch: the network on the
    cross-entropy, the method's own `critic` on a loss of its own (a discriminator's shape)."""

    manual_optimization = True

    def attach(self, model) -> None:
        self.critic = nn.Linear(model.backbone.feature_dim, 1)

    def parameter_groups(self) -> list[dict]:
        return [{"name": "critic", "params": list(self.critic.parameters()), "lr_multiplier": 1.0}]

    def configure_optimizers(self, model, optimizer_factory, groups):
        network = [group for group in groups if group["name"] != "critic"]
        critic = [group for group in groups if group["name"] == "critic"]
        return [optimizer_factory(network), optimizer_factory(critic)]

    def manual_training_step(self, model, batch: TrainingBatch) -> MethodOutput:
        network, critic = model.optimizers()
        features = model.features(batch.images)
        loss, logits = model.classification_loss(features, batch.labels, batch.domains)
        network.zero_grad()
        model.manual_backward(loss)
        network.step()
        critic_loss = self.critic(features.detach()).pow(2).mean()
        critic.zero_grad()
        model.manual_backward(critic_loss)
        critic.step()
        return MethodOutput(loss, logits, batch.labels, {"critic": critic_loss})


def tiny_classifier(monkeypatch: pytest.MonkeyPatch) -> MultiDomainClassifier:
    monkeypatch.setitem(TRAINING_METHODS, "two_optimizers", TwoOptimizerMethod)
    torch.manual_seed(0)
    return MultiDomainClassifier(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=3,
        domain_names=["Art", "Clipart", "Product"],
        trained_domains=["Art", "Clipart"],
        image_size=16,
        method="two_optimizers",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    )


def classifier_batches(count: int, seed: int, domains: list[int]) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(len(domains), 3, 16, 16, generator=generator),
            torch.randint(0, 3, (len(domains),), generator=generator),
            torch.tensor(domains),
        )
        for _ in range(count)
    ]


def test_manual_optimisation_advances_global_step_once_per_optimizer_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The finding behind EMA's batch rule: two `optimizer.step()` calls per batch advance
    `trainer.global_step` by two, so Lightning's EMA with `update_every_n_steps=2` sees only
    odd step indices and never updates, where ours updates every batch."""
    batches = classifier_batches(3, seed=1, domains=[0, 0, 1, 1])
    seen: list[int] = []
    step_counter = pl.Callback()
    step_counter.on_train_batch_end = lambda trainer, *args: seen.append(trainer.global_step)
    stock = EMAWeightAveraging(update_every_n_steps=2)
    make_trainer(max_epochs=1, callbacks=[step_counter, stock]).fit(
        tiny_classifier(monkeypatch), loader(batches)
    )
    assert seen == [2, 4, 6]
    assert int(stock._average_model.n_averaged) == 0
    ours = EMA(update_every_n_steps=2)
    make_trainer(max_epochs=1, callbacks=[ours]).fit(tiny_classifier(monkeypatch), loader(batches))
    assert int(ours._average_model.n_averaged) == 3


def test_ema_averages_the_whole_model_under_manual_optimisation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, recorder = tiny_classifier(monkeypatch), Recorder()
    ema = EMA(decay=0.6)
    make_trainer(max_epochs=2, callbacks=[recorder, ema]).fit(
        model, loader(classifier_batches(3, seed=1, domains=[0, 0, 1, 1]))
    )
    # one update per batch (step indices 1, 3, 5, ... all qualify with every_n 1)
    expected = independent_ema(recorder.weights, 0.6, every=1, start=0)
    assert_weights_equal(list(module_tensors(model)), expected)
    names = [n for n, _ in model.named_parameters()]
    critic = names.index("method.critic.weight")
    assert not torch.allclose(recorder.weights[0][critic], recorder.weights[-1][critic])
    torch.testing.assert_close(model.method.critic.weight, expected[critic])


# ----- SWAD ------------------------------------------------------------------------------------
def segment_means(weights: list[list[torch.Tensor]], length: int) -> list[list[torch.Tensor]]:
    """The average of each run of `length` consecutive steps' weights."""
    return [mean_of(weights[i : i + length]) for i in range(0, len(weights), length)]


def test_swad_fit_stops_when_the_valley_dies_and_ends_with_the_mean_of_its_segments() -> None:
    script = [*SCRIPT, 3.0, 3.0, 3.0, 3.0]
    model, recorder, swad = Tiny(script, val_every=2), Recorder(), SWAD()
    trainer = make_trainer(
        max_epochs=10,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        callbacks=[recorder, swad],
    )
    trainer.fit(model, loader(train_batches()), loader([VAL_BATCH]))
    # the trained-domain loss: the mean over domains A and B, not over images, without C
    assert swad.valley.losses == pytest.approx(SCRIPT)
    # the valley died at evaluation 15 (after step 32 of 40): training stopped there
    assert trainer.global_step == 2 * (SCRIPT_DEATH + 1) == len(recorder.weights)
    assert (swad.valley.start, swad.valley.stop) == (SCRIPT_VALLEY.start, SCRIPT_VALLEY.stop)
    segments = segment_means(recorder.weights, 2)
    expected = mean_of([segments[i] for i in SCRIPT_VALLEY])
    assert_weights_equal(list(module_tensors(model)), expected)
    # only what a future decision could need is kept: nothing, once the valley is dead
    assert swad._segments.keys() <= {len(SCRIPT) - 1}


def test_swad_flushes_the_queue_when_training_ends_in_the_valley(tmp_path: Path) -> None:
    model, recorder, swad = Tiny(SCRIPT, val_every=2), Recorder(), SWAD()
    last = ModelCheckpoint(
        dirpath=tmp_path, filename="last", save_top_k=1, enable_version_counter=False
    )
    trainer = make_trainer(
        max_steps=24,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        enable_checkpointing=True,
        callbacks=[recorder, swad, last],
    )
    trainer.fit(model, loader(train_batches()), loader([VAL_BATCH]))
    assert trainer.global_step == 24 and not swad.valley.dead
    segments = segment_means(recorder.weights, 2)
    expected = mean_of([segments[i] for i in range(3, 10)])  # valley 3..6, flush 7..9
    assert_weights_equal(list(module_tensors(model)), expected)
    # last.ckpt, written at the last validation, holds the SWAD weights; the trained ones apart
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert_weights_equal(list(checkpoint["state_dict"].values()), list(model.state_dict().values()))
    trained = checkpoint["current_model_state"]
    assert_weights_equal(list(trained.values())[:1], recorder.weights[-1][:1])


def test_swad_without_convergence_ends_with_the_last_segment() -> None:
    model, recorder, swad = Tiny([6.0, 5.0, 4.0, 3.0], val_every=2), Recorder(), SWAD()
    trainer = make_trainer(
        max_steps=8, val_check_interval=2, check_val_every_n_epoch=None, callbacks=[recorder, swad]
    )
    with pytest.warns(UserWarning, match="never converged"):
        trainer.fit(model, loader(train_batches()), loader([VAL_BATCH]))
    assert_weights_equal(list(module_tensors(model)), mean_of(recorder.weights[6:8]))


def test_swad_needs_the_outputs_of_validation_step() -> None:
    model = Tiny()
    model.validation_step = lambda batch, batch_idx: F.cross_entropy(model.net(batch[0]), batch[1])
    trainer = make_trainer(
        max_steps=2, val_check_interval=2, check_val_every_n_epoch=None, callbacks=[SWAD()]
    )
    with pytest.raises(TypeError, match=r"logits, labels, domains.*returned Tensor"):
        trainer.fit(model, loader(train_batches()), loader([VAL_BATCH]))


def test_classifier_validation_step_returns_what_swad_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_classifier(monkeypatch).eval()
    images, labels, domains = classifier_batches(1, seed=2, domains=[0, 1, 2, 2])[0]
    with torch.no_grad():
        outputs = model.validation_step((images, labels, domains), 0)
        torch.testing.assert_close(outputs["logits"], model(images, domains))
    assert torch.equal(outputs["labels"], labels) and torch.equal(outputs["domains"], domains)


class ValidatedWeights(pl.Callback):
    """The model's state when each validation starts (what SWAD scores)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.states.append({k: v.clone() for k, v in pl_module.state_dict().items()})


def test_swad_on_the_classifier_scores_the_trained_domains_and_averages_the_whole_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A manual method with its own parameters; validation data includes a held-out domain."""
    model, recorder, validated = tiny_classifier(monkeypatch), Recorder(), ValidatedWeights()
    # converged at the first validation, and a threshold no loss here exceeds
    swad = SWAD(n_converge=1, n_tolerance=2, tolerance_ratio=100.0)
    val_batches = classifier_batches(2, seed=3, domains=[0, 0, 0, 1, 2, 2])
    trainer = make_trainer(
        max_steps=24,  # optimizer steps: 12 batches of two steps
        val_check_interval=3,  # batches
        check_val_every_n_epoch=None,
        callbacks=[recorder, swad, validated],
    )
    trainer.fit(
        model, loader(classifier_batches(4, seed=1, domains=[0, 0, 1, 1])), loader(val_batches)
    )
    assert (trainer.global_step, len(recorder.weights), len(validated.states)) == (24, 12, 4)
    # the loss: each trained domain's mean cross-entropy, averaged over Art and Clipart
    probe = tiny_classifier(monkeypatch).eval()
    expected_losses = []
    for state in validated.states:
        probe.load_state_dict(state)
        with torch.no_grad():
            per_sample = torch.cat(
                [F.cross_entropy(probe(x, d), y, reduction="none") for x, y, d in val_batches]
            )
        domains = torch.cat([d for _, _, d in val_batches])
        expected_losses.append(
            float((per_sample[domains == 0].mean() + per_sample[domains == 1].mean()) / 2)
        )
    assert swad.valley.losses == pytest.approx(expected_losses, rel=1e-5)
    # the valley: at validation k >= 1 segment k-1 joins; segment 3 joins at the end
    assert (swad.valley.start, swad.valley.stop, list(swad.valley.flush())) == (0, 3, [3])
    chosen = range(4)
    segments = segment_means(recorder.weights, 3)
    expected = mean_of([segments[i] for i in chosen])
    assert_weights_equal(list(module_tensors(model)), expected)
    names = [n for n, _ in model.named_parameters()]
    critic = names.index("method.critic.weight")
    torch.testing.assert_close(model.method.critic.weight, expected[critic])


# ----- kill and resume -------------------------------------------------------------------------
def fit_to_the_end(callback_factory, tmp_path: Path, *, kill_after_epochs: int | None, **settings):
    """Fit 10 epochs of 4 batches in one go, or `kill_after_epochs` epochs, then a new model,
    callback and trainer resuming from the checkpoint written at that epoch's end."""
    model_settings = settings.pop("model", {})

    def run(epochs: int, ckpt_path: str | None = None, checkpoints: list | None = None):
        model, callback = Tiny(**model_settings), callback_factory()
        trainer = make_trainer(
            tmp_path,
            max_epochs=epochs,
            enable_checkpointing=checkpoints is not None,
            callbacks=[callback, *(checkpoints or [])],
            **settings,
        )
        trainer.fit(model, loader(train_batches()), loader([VAL_BATCH]), ckpt_path=ckpt_path)
        return model, callback

    if kill_after_epochs is None:
        return run(10)
    every_epoch = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True
    )
    run(kill_after_epochs, checkpoints=[every_epoch])
    (path,) = (tmp_path / "ckpt").glob(f"epoch={kill_after_epochs - 1}-*.ckpt")
    return run(10, ckpt_path=str(path))


def test_ema_resumed_from_a_checkpoint_ends_with_the_same_weights(tmp_path: Path) -> None:
    def factory():
        return EMA(decay=0.8, update_starting_at_step=2)

    settings = dict(val_check_interval=3, check_val_every_n_epoch=None)
    whole, _ = fit_to_the_end(factory, tmp_path / "a", kill_after_epochs=None, **settings)
    resumed, _ = fit_to_the_end(factory, tmp_path / "b", kill_after_epochs=4, **settings)
    assert_weights_equal(list(module_tensors(resumed)), list(module_tensors(whole)))


def test_swad_resumed_mid_segment_ends_with_the_same_valley_and_weights(tmp_path: Path) -> None:
    """Validation every 3 steps, epochs of 4: the kill after epoch 5 (step 20) falls inside a
    segment, after convergence (evaluation 5, step 18), with segments queued."""
    script = [5.0, 4.0, 3.0, 2.0, 2.5, 2.2, 2.4, 2.1, 2.3, 2.6, 2.0, 2.2, 2.4]
    settings = dict(
        val_check_interval=3, check_val_every_n_epoch=None, model=dict(script=script, val_every=3)
    )
    whole, swad_whole = fit_to_the_end(SWAD, tmp_path / "a", kill_after_epochs=None, **settings)
    resumed, swad_resumed = fit_to_the_end(SWAD, tmp_path / "b", kill_after_epochs=5, **settings)
    assert swad_whole.valley.losses == pytest.approx(script)
    assert swad_whole.valley.converged and swad_whole.valley.stop > swad_whole.valley.start
    assert swad_resumed.valley == swad_whole.valley
    assert_weights_equal(list(module_tensors(resumed)), list(module_tensors(whole)))


# ----- configs and the CLI ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ema", "swad"])
def test_overlays_append_their_callback_to_a_base_configs_callbacks(name: str) -> None:
    base = REPO / "configs" / "stylized_imagenet" / "demo.yaml"  # has a callback of its own
    overlay = REPO / "configs" / "averaging" / f"{name}.yaml"
    trainer = resolved("stylized_imagenet", base, overlay)["trainer"]
    shape_bias, averaging = trainer["callbacks"]
    assert shape_bias["class_path"].endswith("ShapeBiasCallback")
    assert averaging["class_path"] == f"lightning_modules.callbacks.averaging.{name.upper()}"
    validation = (trainer["val_check_interval"], trainer["check_val_every_n_epoch"])
    if name == "swad":  # DomainBed-style: every 100 steps, across epochs
        assert validation == (100, None)
        assert averaging["init_args"]["n_tolerance"] == 6
    else:
        plain = resolved("stylized_imagenet", base)["trainer"]
        assert validation == (plain["val_check_interval"], plain["check_val_every_n_epoch"])
        assert averaging["init_args"]["decay"] == 0.999


@pytest.mark.slow  # two CLI fits, about 10 s each on an idle machine
@pytest.mark.parametrize(
    ("callback", "extra"),
    [
        ("EMA", []),
        # validation every 2 steps, converged at the first; the last validation at the last step
        (
            "SWAD",
            [
                "--trainer.callbacks.n_converge=1",
                "--trainer.val_check_interval=2",
                "--trainer.check_val_every_n_epoch=null",
                "--trainer.max_steps=8",
            ],
        ),
    ],
)
def test_a_cli_fit_of_erm_keeps_the_averaged_weights_in_the_model_and_checkpoint(
    callback: str, extra: list[str], tmp_path: Path, mlflow_uri: str
) -> None:
    cli = officehome_main(
        [
            "fit",
            *tiny_args(tmp_path, epochs=4),
            f"--trainer.callbacks+=lightning_modules.callbacks.averaging.{callback}",
            *extra,
        ]
    )
    (averaging,) = [c for c in cli.trainer.callbacks if type(c).__name__ == callback]
    if callback == "SWAD":
        assert averaging.valley.converged and cli.trainer.global_step == 8
    (last,) = (tmp_path / "outputs").rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    model_state = cli.model.state_dict()
    saved, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert saved.keys() == model_state.keys() == trained.keys()
    assert_weights_equal(list(saved.values()), list(model_state.values()))
    weight = "backbone.conv1.weight"
    assert not torch.allclose(saved[weight], trained[weight])
