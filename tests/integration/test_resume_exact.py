"""Seeded runs stopped and resumed end with exactly the weights of the run gone straight
through, with 2 DataLoader workers: at an epoch's end (DINO with drop path and its centre
buffer; I-JEPA, whose masks the workers draw) and inside an epoch (MAE, whose masks the
training step draws; its straight run loads without workers), from an npz and from its
shards. 96 images, batch 16:
6 steps per epoch, 2 epochs."""

import os
import signal
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback
from test_stop_and_resume import StopAfterFirstEpoch, assert_same_weights, final_state

from conftest import REPO

METHODS = {
    "DINO": ["--config", "configs/dino/vit_tiny_cifar.yaml", "--model.init_args.out_dim", "256",
             "--model.init_args.projection_hidden_dim", "64",
             "--data.transform.init_args.n_local", "2"],
    "IJEPA": ["--config", "configs/ijepa/vit_tiny_cifar.yaml",
              "--model.init_args.predictor_depth", "1"],
    "MAE": ["--config", "configs/mae/vit_tiny_cifar.yaml", "--model.init_args.decoder_depth", "1"],
}  # fmt: skip
STOP_AT = 4  # of the first epoch's 6 steps


def pretrain(run: Path, data: Path, method: str, *extra: str, workers: int = 2) -> int:
    from selfsup.cli import main

    config = METHODS[method]
    argv = ["pretrain", config[0], str(REPO / config[1]), *config[2:], "--data.path", str(data),
            "--data.batch_size", "16", "--data.num_workers", str(workers), "--trainer.accelerator", "cpu",
            "--trainer.precision", "32", "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", "2", "--knn_monitor.every_n_epochs", "0",
            "--pictures.every_n_epochs", "0", "--seed_everything", "7",
            "--trainer.deterministic", "true", "--trainer.default_root_dir", str(run), *extra]  # fmt: skip
    return main(argv)


def stopped_then_resumed(run: Path, data: Path, method: str, stop: type[Callback]) -> dict:
    """The run stopped by ``stop`` (SIGTERM), then resumed to its end; the stopped run's
    checkpoint."""
    with pytest.raises(SystemExit):
        pretrain(run, data, method, f"--trainer.callbacks+={__name__}.{stop.__name__}")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert pretrain(run, data, method) == 0
    return ckpt


@pytest.mark.parametrize("method", ["DINO", "IJEPA"])
def test_resume_at_an_epoch_end_gives_the_uninterrupted_weights(tiny_npz, tmp_path, method):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert pretrain(straight, tiny_npz, method) == 0
    stopped = stopped_then_resumed(resumed, tiny_npz, method, StopAfterFirstEpoch)
    assert stopped["global_step"] == 6 and stopped["PretrainDataModule"]["batches"] == 0
    assert final_state(straight) == final_state(resumed) == (12, 1)
    if method == "DINO":
        assert "criterion.center" in stopped["state_dict"]
    assert_same_weights(straight, resumed)


class StopInsideFirstEpoch(Callback):
    """SIGTERM as step STOP_AT ends: GracefulStop saves last.ckpt there and stops."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == STOP_AT:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("source", ["npz", "shards"])
def test_resume_inside_an_epoch_gives_the_uninterrupted_weights(tiny_npz, tmp_path, source):
    """The resumed run trains on the first epoch's last 2 batches (the same images, views
    and masks), then on the second epoch, as the straight run does; that one loads its
    data without worker processes (the draws do not depend on who loads). The same over
    the npz packed to shards (``selfsup data pack``)."""
    from selfsup.cli import main

    data = tiny_npz
    if source == "shards":
        data = tmp_path / "shards"
        assert main(["data", "pack", "--data.path", str(tiny_npz), "--out", str(data)]) == 0
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert pretrain(straight, data, "MAE", workers=0) == 0
    stopped = stopped_then_resumed(resumed, data, "MAE", StopInsideFirstEpoch)
    assert stopped["global_step"] == STOP_AT
    assert stopped["PretrainDataModule"] == {"epoch": 0, "batches": STOP_AT}
    assert final_state(straight) == final_state(resumed) == (12, 1)
    assert_same_weights(straight, resumed)
