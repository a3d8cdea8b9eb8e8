"""DomainBed's model selection on synthetic MLflow histories with a known answer, and the kept
checkpoint of a selected validation found by the step stored in it."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from experiments.sweeps.runs import metric_history, validation_epochs
from experiments.sweeps.selection import ORACLE_METHODS, TrialRecord, best_checkpoints, select_all

TRAINED = ["Clipart", "Product"]


def log_run(client, experiment_id, epochs: dict[str, list[float]], steps_per_epoch=10) -> str:
    """A run logged as Lightning logs one: `epoch` at every logging step, validation metrics
    at each epoch's last step (twice: an earlier process's point, then the one that counts)."""
    run_id = client.create_run(experiment_id).info.run_id
    count = len(next(iter(epochs.values())))
    for epoch in range(count):
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch, 5):
            client.log_metric(run_id, "epoch", epoch, step=step)
            client.log_metric(run_id, "train/loss", 1.0, step=step)
        last_step = (epoch + 1) * steps_per_epoch - 1
        client.log_metric(run_id, "epoch", epoch, step=last_step)
        for metric, values in epochs.items():
            # A process that started over (killed before its first checkpoint) logged this
            # step before: the later point is the one that counts.
            client.log_metric(run_id, metric, -1.0, timestamp=1000 * epoch + 1, step=last_step)
            client.log_metric(
                run_id, metric, values[epoch], timestamp=1000 * epoch + 2, step=last_step
            )
    return run_id


def record(client, run_id, held_out, draw, tmp_path, metrics, seed=0) -> TrialRecord:
    run = client.get_run(run_id)
    history = {m: metric_history(client, run, m) for m in metrics}
    folder = tmp_path / run_id
    folder.mkdir()
    return TrialRecord(
        f"h{run_id[:6]}",
        "srm",
        tuple(held_out),
        seed,
        draw,
        run_id,
        history,
        checkpoint_dir=str(folder),
        validation_epochs=validation_epochs(client, run, history["val/acc_mean"]),
    )


def save_checkpoint(path, global_step: int, epoch: int) -> None:
    """What `checkpoint_at` reads of a Lightning checkpoint (and a tensor, as the weights)."""
    state = {"global_step": global_step, "epoch": epoch, "state_dict": {"w": torch.zeros(3)}}
    torch.save(state, path)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('sel') / 'mlflow.db'}")


def test_selection_methods_pick_the_known_draws_and_epochs(client, tmp_path):
    experiment_id = client.create_experiment("selection")
    metrics = ["val/acc_mean", "val/acc_held_out_mean", "val/acc/Clipart", "val/acc/Product"]
    # Held out: Art. Draw 0 peaks on the trained domains at epoch 1 (0.70), but on the
    # held-out domain at epoch 2 (0.60); draw 1 is flatter.
    draw0 = log_run(
        client,
        experiment_id,
        {
            "val/acc_mean": [0.50, 0.70, 0.60],
            "val/acc_held_out_mean": [0.30, 0.40, 0.60],
            "val/acc/Clipart": [0.5, 0.7, 0.6],
            "val/acc/Product": [0.5, 0.7, 0.6],
        },
    )
    draw1 = log_run(
        client,
        experiment_id,
        {
            "val/acc_mean": [0.60, 0.65, 0.68],
            "val/acc_held_out_mean": [0.50, 0.55, 0.45],
            "val/acc/Clipart": [0.6, 0.6, 0.7],
            "val/acc/Product": [0.6, 0.7, 0.66],
        },
    )
    records = [
        record(client, draw0, ["Art"], 0, tmp_path, metrics),
        record(client, draw1, ["Art"], 1, tmp_path, metrics),
    ]
    # Points are keyed by their step, and map to epochs through `epoch` at the same step; the
    # later of two points wins.
    assert records[0].history["val/acc_mean"] == {9: 0.50, 19: 0.70, 29: 0.60}
    assert records[0].validation_epochs == {9: 0, 19: 1, 29: 2}
    # Leave-one-domain-out: runs that also leave out Clipart, or Product. Draw 1 does better
    # on the extra left-out domain (mean 0.8 vs 0.3) at their last epoch.
    for draw, extra, value in [
        (0, "Clipart", 0.2),
        (0, "Product", 0.4),
        (1, "Clipart", 0.9),
        (1, "Product", 0.7),
    ]:
        run_id = log_run(
            client,
            experiment_id,
            {
                "val/acc_mean": [0.5, 0.5],
                "val/acc_held_out_mean": [0.4, 0.4],
                f"val/acc/{extra}": [0.0, value],
            },
        )
        records.append(
            record(
                client,
                run_id,
                ["Art", extra],
                draw,
                tmp_path,
                ["val/acc_mean", "val/acc_held_out_mean", f"val/acc/{extra}"],
            )
        )
    # The epoch-1 checkpoint of draw 0 was kept (the monitored best): written after the
    # validation logged at step 19, it holds global_step 20.
    save_checkpoint(tmp_path / draw0 / "best-epoch001.ckpt", 20, 1)

    selections = select_all(records)
    pick = {m: next(p for p in picks if p.held_out == "Art") for m, picks in selections.items()}
    tdv, oracle, lodo = (
        pick["training_domain_validation"],
        pick["test_domain_oracle"],
        pick["leave_one_domain_out"],
    )
    assert (tdv.draw, tdv.epoch, tdv.score, tdv.accuracy) == (0, 1, 0.70, 0.40)
    assert tdv.step == 19
    assert tdv.checkpoint.endswith("best-epoch001.ckpt") and tdv.method not in ORACLE_METHODS
    # The oracle looks at the held-out domain: same draw, a different epoch.
    assert (oracle.draw, oracle.epoch, oracle.accuracy) == (0, 2, 0.60)
    assert oracle.method in ORACLE_METHODS
    assert oracle.checkpoint == ""  # epoch 2 was neither the best nor (kept as) the last
    assert (lodo.draw, lodo.epoch, lodo.accuracy) == (1, 2, 0.45)
    assert lodo.checkpoint == ""  # draw 1 kept no checkpoint
    assert lodo.score == pytest.approx(0.8)
    # Groups without the runs leave-one-domain-out needs get no LODO pick.
    assert {p.held_out for p in selections["leave_one_domain_out"]} == {"Art"}
    best = {(b.method, b.held_out): b for b in best_checkpoints(selections)}
    assert best[("training_domain_validation", "Art")].run_id == draw0


def test_multi_domain_has_training_domain_validation_only():
    history = {"val/acc_mean": {0: 0.4, 1: 0.6, 2: 0.6}}
    epochs = {0: 0, 1: 1, 2: 2}
    records = [TrialRecord("a", "none", (), 0, 0, "r", history, validation_epochs=epochs)]
    selections = select_all(records)
    assert list(selections) == ["training_domain_validation"]
    (pick,) = selections["training_domain_validation"]
    assert (pick.epoch, pick.accuracy) == (1, 0.6)  # a tie goes to the earlier epoch


def test_leave_one_domain_out_finds_domains_whose_metric_names_differ(client, tmp_path):
    """Held-out domains are named as configured (`Real World`), their metrics metric-safe
    (`val/acc/Real_World`): the selection pairs them instead of looking for two domains."""
    experiment_id = client.create_experiment("selection-names")
    base = log_run(client, experiment_id, {"val/acc_mean": [0.5], "val/acc_held_out_mean": [0.4]})
    records = [record(client, base, ["Art"], 0, tmp_path, ["val/acc_mean"])]
    for extra, key, value in [("Clipart", "Clipart", 0.3), ("Real World", "Real_World", 0.7)]:
        run_id = log_run(client, experiment_id, {"val/acc_mean": [0.5], f"val/acc/{key}": [value]})
        metrics = ["val/acc_mean", f"val/acc/{key}"]
        records.append(record(client, run_id, ["Art", extra], 0, tmp_path, metrics))
    picks = select_all(records)["leave_one_domain_out"]
    assert [(p.held_out, p.draw) for p in picks] == [("Art", 0)]
    assert picks[0].score == pytest.approx(0.5)


def log_step_run(client, experiment_id, values: dict[str, list[float]], val_steps, epoch_of):
    """A run validating every 6 steps across epochs of 10 steps (`val_check_interval: 6`,
    `check_val_every_n_epoch: null`): `epoch` at every 5th step and at each validation."""
    run_id = client.create_run(experiment_id).info.run_id
    for step in range(0, val_steps[-1] + 1, 5):
        client.log_metric(run_id, "epoch", epoch_of(step), step=step)
    for index, step in enumerate(val_steps):
        client.log_metric(run_id, "epoch", epoch_of(step), step=step)
        for metric, series in values.items():
            client.log_metric(run_id, metric, series[index], step=step)
    return run_id


def test_step_based_validation_keeps_two_validations_of_one_epoch(client, tmp_path):
    """Two validations in epoch 1 (steps 11 and 17): the first is the best on the trained
    domains, the second on the held-out one. Keyed by epoch, the second would overwrite the
    first; keyed by step both count, and each finds its own checkpoint whatever its name."""
    experiment_id = client.create_experiment("selection-steps")
    steps = [5, 11, 17, 23]
    run_id = log_step_run(
        client,
        experiment_id,
        {"val/acc_mean": [0.50, 0.80, 0.60, 0.70], "val/acc_held_out_mean": [0.3, 0.45, 0.5, 0.4]},
        steps,
        lambda step: step // 10,
    )
    metrics = ["val/acc_mean", "val/acc_held_out_mean"]
    trial = record(client, run_id, ["Art"], 0, tmp_path, metrics)
    assert trial.steps() == steps
    assert trial.validation_epochs == {5: 0, 11: 1, 17: 1, 23: 2}
    # `checkpoint.filename: best-epoch{epoch:03d}` names both of epoch 1's checkpoints alike
    # (Lightning adds -v1 to the later): only the step inside tells them apart.
    folder = tmp_path / run_id
    save_checkpoint(folder / "best-epoch001.ckpt", 18, 1)
    save_checkpoint(folder / "best-epoch001-v1.ckpt", 12, 1)
    save_checkpoint(folder / "last.ckpt", 24, 2)
    (folder / "broken.ckpt").write_bytes(b"not a checkpoint")

    with pytest.warns(UserWarning, match=r"broken\.ckpt: not read as a Lightning checkpoint"):
        selections = select_all([trial])
    (tdv,) = selections["training_domain_validation"]
    assert (tdv.step, tdv.epoch, tdv.score, tdv.accuracy) == (11, 1, 0.80, 0.45)
    assert tdv.checkpoint.endswith("best-epoch001-v1.ckpt")
    (oracle,) = selections["test_domain_oracle"]
    assert (oracle.step, oracle.epoch, oracle.accuracy) == (17, 1, 0.5)
    assert oracle.checkpoint.endswith("best-epoch001.ckpt")
    assert trial.checkpoint_at(23).endswith("last.ckpt")
    assert trial.checkpoint_at(5) == ""  # not kept
