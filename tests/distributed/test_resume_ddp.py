"""Two processes (gloo), killed inside an epoch and resumed, end with exactly the weights of
the same two-process run gone straight through: each process resumes its own shard of the
epoch, and MAE's masks, drawn in the training step, are seeded per (epoch, batch, rank).

The same over the images packed to shards (`selfsup data pack`). Lightning re-runs sys.argv
for rank 1, so the command runs in a subprocess.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from conftest import REPO, free_port

KILL_AFTER = 4  # 96 images, 2 processes x batch 8: 6 steps per epoch


class SigkillAfterCheckpoint(Callback):
    """Every process SIGKILLs itself as the step after KILL_AFTER starts, when last.ckpt
    (written every 4 steps) holds step KILL_AFTER."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)


def pretrain(run: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    here = Path(__file__).parent  # this module, and the conftest it imports
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_PORT": str(free_port()),
        "PYTHONPATH": path,
    }
    cmd = [sys.executable, "-m", "selfsup.cli", "pretrain",
           "--config", str(REPO / "configs/mae/vit_tiny_cifar.yaml"),
           "--model.init_args.decoder_depth", "1", "--data.path", str(data),
           "--data.batch_size", "8", "--data.num_workers", "1", "--trainer.accelerator", "cpu",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.precision", "32",
           "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2",
           "--knn_monitor.every_n_epochs", "0", "--pictures.every_n_epochs", "0",
           "--checkpoint_every_n_steps", "4", "--seed_everything", "7",
           "--trainer.deterministic", "true", "--trainer.default_root_dir", str(run), *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=run.parent, env=env, capture_output=True, text=True, timeout=600)


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("source", ["npz", "shards"])
def test_two_processes_killed_inside_an_epoch_resume_to_the_uninterrupted_weights(
    tiny_npz, tmp_path, source
):
    data = tiny_npz
    if source == "shards":  # the same images packed with `selfsup data pack`
        from selfsup.cli import main

        data = tmp_path / "shards"
        assert main(["data", "pack", "--data.path", str(tiny_npz), "--out", str(data)]) == 0
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = pretrain(straight, data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = pretrain(killed, data, f"--trainer.callbacks+={__name__}.SigkillAfterCheckpoint")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert last(killed)["PretrainDataModule"] == {"epoch": 0, "batches": KILL_AFTER}
    proc = pretrain(killed, data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = last(straight), last(killed)
    assert a["global_step"] == b["global_step"] == 12
    for name, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][name], atol=1e-6), name
