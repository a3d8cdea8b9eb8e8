"""The CLI's own pieces: moved class paths in old configs, the two checkpoint callbacks (the
monitored best, and the always-latest `last.ckpt` that `--ckpt_path last` resumes), and one
MLflow logger per command."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pytorch_lightning.callbacks import ModelCheckpoint

from experiments.officehome import main
from lightning_modules.cli import MOVED_CLASS_PATHS, check_moved_class_paths, checkpoint_callbacks
from lightning_modules.tracking import StylebenchMLFlowLogger
from tests.helpers.cli import tiny_demo_args

OLD = "lightning_modules.shape_bias.ShapeBiasCallback"
NEW = "lightning_modules.callbacks.shape_bias.ShapeBiasCallback"


def test_old_class_path_in_a_config_file_names_the_file_and_the_new_path(tmp_path: Path) -> None:
    assert MOVED_CLASS_PATHS[OLD] == NEW
    config = tmp_path / "old.yaml"
    config.write_text(f"trainer:\n  callbacks:\n  - class_path: {OLD}\n")
    message = rf"config file {config} names {OLD}, which has moved to {NEW}"
    for args in (["test", "--config", str(config)], ["test", f"--config={config}"]):
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            check_moved_class_paths(args)


def test_old_class_path_on_the_command_line_is_named_too() -> None:
    with pytest.raises(ValueError, match=r"command-line value .* names lightning_modules\.shape"):
        check_moved_class_paths(["test", f'--trainer.callbacks+={{"class_path": "{OLD}"}}'])
    # the new path, and names that merely start like the old one, pass
    check_moved_class_paths(["test", f"--trainer.callbacks+={NEW}", f"--x={OLD}Fast"])


def test_old_class_path_stops_the_cli_before_anything_is_built(tmp_path: Path) -> None:
    config = tmp_path / "old.yaml"
    config.write_text(f"trainer:\n  callbacks:\n  - class_path: {OLD}\n")
    with pytest.raises(ValueError, match=rf"config file {config} names {OLD}, which has moved"):
        main(["test", *tiny_demo_args(tmp_path), "--config", str(config)])


def checkpoint_args(**overrides) -> dict:
    """`checkpoint.*` as the parser gives it: every ModelCheckpoint argument, with the CLI's
    defaults."""
    args = {
        name: parameter.default
        for name, parameter in inspect.signature(ModelCheckpoint).parameters.items()
    }
    args.update(monitor="val/acc_mean", mode="max", save_last=True, filename="best-epoch{epoch}")
    return {**args, **overrides}


def test_save_last_adds_an_unmonitored_latest_checkpoint_beside_the_best(tmp_path: Path) -> None:
    best, latest = checkpoint_callbacks(
        checkpoint_args(dirpath=str(tmp_path), every_n_train_steps=3)
    )
    assert (best.monitor, best.mode, best.save_last) == ("val/acc_mean", "max", False)
    assert latest.monitor is None and latest.save_top_k == 1 and not latest.save_last
    assert latest.filename == "last" and latest.dirpath == best.dirpath == str(tmp_path)
    assert latest.format_checkpoint_name({}) == str(tmp_path / "last.ckpt")
    assert latest.state_key != best.state_key  # both kept in a checkpoint, resumable
    assert "'every_n_train_steps': 3" in latest.state_key


def test_without_save_last_or_monitor_there_is_one_checkpoint_callback() -> None:
    only, latest = checkpoint_callbacks(checkpoint_args(save_last=False))
    assert latest is None and not only.save_last
    # Unmonitored, every save is a top-k save: Lightning's own `last.ckpt` stays current.
    only, latest = checkpoint_callbacks(checkpoint_args(monitor=None))
    assert latest is None and only.save_last


def test_last_checkpoint_is_the_latest_state_when_the_monitor_stops_improving(
    tmp_path, mlflow_uri
) -> None:
    # val/num_samples is the same every epoch: only the first epoch is a "best", which is where
    # Lightning's own save_last would leave last.ckpt.
    cli = main(
        [
            "fit",
            *tiny_demo_args(
                tmp_path,
                "--checkpoint.monitor",
                "val/num_samples",
                "--trainer.limit_train_batches",
                "2",
                "--data.init_args.style_shift",
                "{method: null}",
                epochs=3,
            ),
        ]
    )
    callback = cli.trainer.checkpoint_callback
    assert callback.monitor == "val/num_samples"  # the monitored one: what ckpt_path="best" reads
    best = torch.load(callback.best_model_path, map_location="cpu", weights_only=True)
    last = torch.load(Path(callback.dirpath) / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2
    assert last["global_step"] == cli.trainer.global_step == 6
    for name, value in cli.model.state_dict().items():
        torch.testing.assert_close(last["state_dict"][name], value, msg=name)
    # log_model: true uploads both when training ends
    uploaded = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(cli.trainer.logger.run_id)}
    assert {"best-epoch000", "last"} <= uploaded


@pytest.fixture
def built_loggers(monkeypatch: pytest.MonkeyPatch) -> list[StylebenchMLFlowLogger]:
    """Every StylebenchMLFlowLogger built while the test runs, in order."""
    built: list[StylebenchMLFlowLogger] = []
    original = StylebenchMLFlowLogger.__init__

    # `wraps` keeps the signature and docstring jsonargparse reads the config's init_args from.
    @functools.wraps(original)
    def counting(self, *args, **kwargs) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(StylebenchMLFlowLogger, "__init__", counting)
    return built


def test_fit_resumes_from_a_checkpoint_file_with_its_own_optimizer(
    tmp_path, mlflow_uri, built_loggers
) -> None:
    # LightningCLI re-parses the model from a checkpoint file's hyperparameters, which leave the
    # optimizer out: AdamW fell back to SGD and loading its state failed. The override keeps the
    # command's config; the private hook it overrides must still exist.
    from pytorch_lightning.cli import LightningCLI

    assert callable(getattr(LightningCLI, "_parse_ckpt_path", None))
    short = ("--trainer.limit_train_batches", "2", "--data.init_args.style_shift", "{method: null}")
    first = main(["fit", *tiny_demo_args(tmp_path, *short, epochs=1)])
    # One logger per command: the one built from the config, named after the data and model.
    assert built_loggers == [first.trainer.logger]
    assert first.trainer.logger.experiment_name == first.datamodule.dataset_name
    assert first.trainer.logger.run_name == first.run_name()
    last = Path(first.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    built_loggers.clear()
    resumed = main(["fit", *tiny_demo_args(tmp_path, *short, epochs=2), "--ckpt_path", str(last)])
    assert built_loggers == [resumed.trainer.logger]  # also when it attaches to the run resumed
    assert type(resumed.trainer.optimizers[0]).__name__ == "AdamW"
    assert resumed.trainer.global_step == 4  # two steps before, two after the resume
    assert resumed.trainer.logger.run_id == first.trainer.logger.run_id


def test_replaced_dann_settings_name_the_method_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"names adaptation, a setting that was replaced; use "):
        check_moved_class_paths(["fit", "--model.init_args.adaptation", "dann"])
    config = tmp_path / "old.yaml"
    config.write_text("model:\n  init_args:\n    discriminator_hidden_features: 32\n")
    with pytest.raises(ValueError, match=rf"config file {config} names discriminator_hidden"):
        check_moved_class_paths(["fit", "--config", str(config)])
    # the word in a comment, or in another setting's name, is not the setting
    config.write_text("# unsupervised adaptation: see dann.yaml\ndata:\n  target_adaptation: 1\n")
    check_moved_class_paths(["fit", "--config", str(config)])


def test_an_adaptation_method_without_target_domains_is_refused_before_the_run() -> None:
    from types import SimpleNamespace

    from lightning_modules.classifier import MultiDomainClassifier
    from lightning_modules.cli import check_settings

    model = MultiDomainClassifier(
        backbone="resnet20", recalibration="none", num_classes=3, image_size=16, method="dann"
    )
    data = SimpleNamespace(batch_size=4, eval_batch_size=4, target_domains=[])
    with pytest.raises(ValueError, match=r"method 'dann' adapts to unlabelled target domains"):
        check_settings(model, data)
    check_settings(model, SimpleNamespace(batch_size=4, eval_batch_size=4, target_domains=["B"]))
