"""`selfsup pretrain` under Lightning DDP with two real CPU processes (gloo).

Lightning re-runs sys.argv for rank 1, so the command runs in a subprocess.
"""

import json
import subprocess
import sys

import torch

from conftest import ddp_pretrain


def test_two_process_pretraining_writes_one_run_and_its_checkpoint(tiny_npz, tmp_path):
    run = tmp_path / "ddp"
    proc = ddp_pretrain(
        "configs/simclr/resnet18_cifar.yaml",
        tiny_npz,
        run,
        "--trainer.max_steps",
        "3",
        "--model.init_args.projection_hidden_dim",
        "64",
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    # The summary line is printed once, by rank 0.
    assert proc.stdout.count("kNN top-1 (k=20)") == 1, proc.stdout
    # The global batch (2 x 8) sets the learning rate: base_lr x 16 / 256.
    base_lr = ckpt["hyper_parameters"]["base_lr"]
    assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == base_lr * 16 / 256
    knn = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfsup.cli",
            "knn",
            "--ckpt",
            str(run),
            "--data.path",
            str(tiny_npz),
            "--data.num_workers",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert knn.returncode == 0, knn.stderr[-2000:]
    assert json.loads(knn.stdout.strip().splitlines()[-1])["task"] == "knn"


def test_two_processes_over_shards_take_one_epoch_of_every_sample(tiny_npz, tmp_path):
    """96 packed images, two processes with batches of 8: one epoch is 96 / 16 = 6 steps,
    every sample once (the samplers that split files split shards the same way)."""
    from selfsup.cli import main

    shards = tmp_path / "shards"
    assert main(["data", "pack", "--data.path", str(tiny_npz), "--out", str(shards)]) == 0
    run = tmp_path / "ddp-shards"
    ddp_pretrain("configs/simclr/resnet18_cifar.yaml", shards, run, "--trainer.max_epochs", "1",
                 "--model.init_args.projection_hidden_dim", "64",
                 "--knn_monitor.every_n_epochs", "0")  # fmt: skip
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 0
