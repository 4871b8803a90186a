"""A run stopped by SIGTERM, or killed by SIGKILL, resumes from its newest checkpoint and
ends where an uninterrupted run ends: same global step and epoch, and (seeded) the same
weights, from a checkpoint at an epoch's end or inside an epoch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from conftest import REPO

MAX_STEPS = 12  # 96 images, batch 16: 6 steps per epoch -> 2 epochs
KILL_AFTER = 8  # a checkpoint every 4 steps: 4 and 8 inside epochs, 6 at the first's end


def command(run: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "selfsup.cli", "pretrain",
            "--config", str(REPO / "configs/simclr/resnet18_cifar.yaml"), "--data.path", str(data),
            "--data.batch_size", "16", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.precision", "32", "--trainer.enable_progress_bar", "false",
            "--model.init_args.projection_hidden_dim", "64", "--knn_monitor.every_n_epochs", "0",
            "--trainer.max_steps", str(MAX_STEPS), "--checkpoint_every_n_steps", "4",
            "--seed_everything", "7", "--trainer.deterministic", "true",
            "--status_interval", "0", "--trainer.log_every_n_steps", "1",
            "--trainer.default_root_dir", str(run)]  # fmt: skip


def run_to_end(run: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command(run, data), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Lightning's banners and tips are not printed; its other lines (the seed) still are.
    for chatter in ("GPU available", "TPU available", "HPU available", "Tip:", "litlogger"):
        assert chatter not in proc.stderr, proc.stderr[-3000:]
    assert "Seed set to 7" in proc.stderr
    return proc


def start(run: Path, data: Path, *extra: str) -> subprocess.Popen:
    """In its own process group, as a terminal or a scheduler runs it: a signal sent to
    the group reaches the DataLoader workers too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*command(run, data), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def wait_for_step(run: Path, proc: subprocess.Popen, step: int) -> dict:
    """Wait until the run's status.json reports training at ``step`` or later."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            status = json.loads((run / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        training = status.get("state") == "training" and status["global_step"] >= step
        if training and (run / "checkpoints" / "last.ckpt").is_file():
            return status
        time.sleep(0.05)
    raise AssertionError("the run did not reach the step in time")


def final_state(run: Path) -> tuple[int, int]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["epoch"]


def assert_same_weights(a: Path, b: Path) -> None:
    """Every tensor of the two runs' last.ckpt state_dicts (weights and buffers) agrees."""
    wa, wb = (
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
            "state_dict"
        ]
        for run in (a, b)
    )
    assert wa.keys() == wb.keys()
    for name, value in wa.items():
        assert torch.allclose(value.float(), wb[name].float(), atol=1e-6), name


class SigkillAfterCheckpoint(Callback):
    """SIGKILL as the step after KILL_AFTER starts: last.ckpt was written inside the
    second epoch (by the every-N-steps checkpoint at the end of step KILL_AFTER)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)


def test_sigkill_then_resume_auto_ends_like_an_uninterrupted_run(tiny_npz, tmp_path):
    reference = tmp_path / "reference"
    run_to_end(reference, tiny_npz)
    assert final_state(reference)[0] == MAX_STEPS
    run = tmp_path / "killed"
    here = Path(__file__).parent  # this module, and the conftest it imports
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    callback = f"--trainer.callbacks+={Path(__file__).stem}.SigkillAfterCheckpoint"
    proc = subprocess.run([*command(run, tiny_npz), callback], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Written inside the second epoch, after 2 of its 6 batches.
    assert ckpt["global_step"] == KILL_AFTER
    assert ckpt["PretrainDataModule"] == {"epoch": 1, "batches": KILL_AFTER - 6}
    resumed = run_to_end(run, tiny_npz)  # --resume auto is the default
    assert "resuming from" in resumed.stderr
    assert final_state(run) == final_state(reference)
    assert_same_weights(run, reference)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    # The training curve continues from the checkpoint's step, up to the last step.
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    step_col, loss_col = header.index("step"), header.index("train/loss")
    steps = [int(r.split(",")[step_col]) for r in rows[1:] if r.split(",")[loss_col]]
    assert steps[-1] == MAX_STEPS - 1 and sorted(set(steps)) == list(range(MAX_STEPS))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_saves_the_current_step_and_the_run_continues(tiny_npz, tmp_path, signum):
    run = tmp_path / "stopped"
    proc = start(run, tiny_npz, "--data.num_workers", "1")
    wait_for_step(run, proc, 3)
    os.killpg(proc.pid, signum)  # main process and its DataLoader worker
    _, stderr = proc.communicate(timeout=120)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped", stderr[-3000:]
    step, _ = final_state(run)
    # Saved at the step where it stopped, not at the last periodic checkpoint.
    assert step == status["global_step"] and "saved" in stderr
    run_to_end(run, tiny_npz)
    assert final_state(run)[0] == MAX_STEPS


class StopAfterFirstEpoch(Callback):
    """SIGTERM as the first epoch ends: the run stops there and saves."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class RecordLastCheckpoint(Callback):
    """The step of last.ckpt when the second epoch starts."""

    step: int | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            RecordLastCheckpoint.step = torch.load(path, weights_only=True)["global_step"]


def test_resume_after_an_epoch_ends_with_the_uninterrupted_runs_weights(tiny_npz, tmp_path):
    """Seeded SimCLR, 2 epochs: straight through, or interrupted after the first and resumed
    (every epoch's random streams start from (seed, epoch): data order, augmentations,
    worker seeds)."""
    from selfsup.cli import main

    def run(path: Path, *extra: str) -> int:
        argv = ["pretrain", "--config", str(REPO / "configs/simclr/resnet18_cifar.yaml"),
                "--data.path", str(tiny_npz), "--data.batch_size", "16", "--data.num_workers", "1",
                "--trainer.accelerator", "cpu", "--trainer.precision", "32",
                "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2",
                "--model.init_args.projection_hidden_dim", "64", "--seed_everything", "7",
                "--trainer.deterministic", "true", "--trainer.default_root_dir", str(path),
                *extra]  # fmt: skip
        return main(argv)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(straight, "--trainer.callbacks+=test_stop_and_resume.RecordLastCheckpoint") == 0
    assert RecordLastCheckpoint.step == 6  # last.ckpt is written at every epoch's end
    with pytest.raises(SystemExit):
        run(resumed, "--trainer.callbacks+=test_stop_and_resume.StopAfterFirstEpoch")
    assert final_state(resumed)[0] == 6
    assert run(resumed) == 0
    assert final_state(straight)[0] == final_state(resumed)[0] == 12
    assert_same_weights(straight, resumed)
