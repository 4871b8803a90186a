"""Two real DDP processes (gloo): the EMA teacher stays identical on every rank."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import REPO, free_port

SCRIPTS = Path(__file__).parent / "scripts"


def test_byol_teacher_identical_on_both_ranks_after_several_steps(tiny_npz, tmp_path):
    run = tmp_path / "byol"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_PORT": str(free_port()),
        "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "selfsup.cli",
        "pretrain",
        "--config",
        str(REPO / "configs/byol/vit_tiny_cifar.yaml"),
        "--data.path",
        str(tiny_npz),
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--model.init_args.projection_hidden_dim",
        "64",
        "--model.init_args.prediction_hidden_dim",
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
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.callbacks+=teacher_dump.DumpTeacher",
        "--knn_monitor.every_n_epochs",
        "0",
        "--trainer.default_root_dir",
        str(run),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    t0 = torch.load(run / "teacher_rank0.pt", weights_only=True)
    t1 = torch.load(run / "teacher_rank1.pt", weights_only=True)
    assert t0.keys() == t1.keys() and len(t0) > 10
    for name in t0:
        assert torch.equal(t0[name], t1[name]), name
    # ...and it moved away from its initial copy of the student.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    student = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    assert any(not torch.equal(student[k], t0["teacher_" + k]) for k in student)
