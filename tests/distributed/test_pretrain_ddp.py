"""`selfsup pretrain` under Lightning DDP with two real CPU processes (gloo).

Lightning re-runs sys.argv for rank 1, so the command runs in a subprocess.
"""

import json
import os
import subprocess
import sys

import torch

from conftest import REPO, free_port


def test_two_process_pretraining_writes_one_run_and_its_checkpoint(tiny_npz, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
    cmd = [
        sys.executable,
        "-m",
        "selfsup.cli",
        "pretrain",
        "--config",
        str(REPO / "configs/simclr/resnet18_cifar.yaml"),
        "--data.path",
        str(tiny_npz),
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--model.init_args.projection_hidden_dim",
        "64",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.precision",
        "32",
        "--trainer.max_steps",
        "3",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(run),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
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
            "--data",
            str(tiny_npz),
            "--num-workers",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert knn.returncode == 0, knn.stderr[-2000:]
    assert json.loads(knn.stdout.strip().splitlines()[-1])["task"] == "knn"
