"""`selfsup launch` against a real SLURM cluster: a 2-task DDP pretraining job, pre-emption
with requeue and resume, and an array of probes with its summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
import torch
from slurm_cluster import DAEMONS, REQUIRED, running_cluster

from conftest import REPO


@pytest.fixture(scope="session")
def slurm():
    yield from running_cluster()


MAX_STEPS = 18  # 96 images, 2 tasks x batch 8: 6 steps per epoch -> 3 epochs
CONFIG = str(REPO / "configs/simclr/resnet18_cifar.yaml")


def selfsup(cluster, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], env=cluster.env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def launch_pretrain(cluster, run: Path, data: Path) -> str:
    result = selfsup(
        cluster, "launch", "pretrain", "--run_dir", str(run),
        "--accelerator", "cpu", "--tasks_per_node", "2", "--cpus_per_task", "1", "--time", "20",
        "--signal_seconds", "60", "--", "--config", CONFIG,
        "--data.path", str(data), "--data.batch_size", "8", "--data.num_workers", "0",
        "--trainer.precision", "32", "--trainer.max_steps", str(MAX_STEPS),
        "--trainer.enable_progress_bar", "false", "--knn_monitor.every_n_epochs", "0",
        "--model.init_args.projection_hidden_dim", "64", "--status_interval", "0",
    )  # fmt: skip
    assert result["run_dir"] == str(run)
    assert (run / "config.yaml").is_file() and (run / "pretrain.sbatch").is_file()
    return result["job_id"]


def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def job_log(run: Path, job_id: str) -> str:
    return "".join((run / f"slurm-{job_id}.{ext}").read_text() for ext in ("out", "err"))


@pytest.fixture(scope="module")
def reference_run(slurm, tiny_npz, tmp_path_factory) -> Path:
    """An uninterrupted 2-task job: the run the pre-empted one must end like."""
    run = tmp_path_factory.mktemp("slurm") / "reference"
    job_id = launch_pretrain(slurm, run, tiny_npz)
    record = slurm.wait(job_id)
    assert record["JobState"] == "COMPLETED", job_log(run, job_id)
    return run


def test_two_task_pretraining_job_completes(reference_run):
    ckpt = last_checkpoint(reference_run)
    assert ckpt["global_step"] == MAX_STEPS
    status = json.loads((reference_run / "status.json").read_text())
    assert status["state"] == "finished" and status["slurm_restart_count"] == 0
    # The resolved config pins the seed and the trainer's shape matches the job's.
    config = (reference_run / "config.yaml").read_text()
    assert "seed_everything: true" not in config and "num_nodes: 1" in config
    assert "devices: 2" in config or "devices: '2'" in config


def test_preempted_job_checkpoints_requeues_and_resumes(slurm, reference_run, tiny_npz, tmp_path):
    run = tmp_path / "preempted"
    job_id = launch_pretrain(slurm, run, tiny_npz)
    # Signal only once Lightning's handlers are in place: the run reports training.
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, job_log(run, job_id)
        try:
            status = json.loads((run / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        if status.get("state") == "training" and status["global_step"] >= 2:
            break
        time.sleep(0.1)
    slurm.run("scancel", "--signal=USR1", job_id)
    record = slurm.wait(job_id)
    log = job_log(run, job_id)
    assert record["JobState"] == "COMPLETED" and record["Restarts"] == "1", log
    assert "restart 0" in log and "restart 1" in log  # one log, appended across the requeue
    assert "resuming from" in log
    final = json.loads((run / "status.json").read_text())
    assert final["state"] == "finished" and final["slurm_restart_count"] == 1
    # The requeued job continued from the checkpoint written on the signal, not from 0.
    assert final["start_step"] >= status["global_step"]
    ckpt, reference = last_checkpoint(run), last_checkpoint(reference_run)
    assert (ckpt["global_step"], ckpt["epoch"]) == (reference["global_step"], reference["epoch"])
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # cleaned once a newer last.ckpt existed
    # The resumed run ends with the uninterrupted run's weights, not just at its step.
    assert_same_weights(ckpt["state_dict"], reference["state_dict"])


def assert_same_weights(got: dict, want: dict, atol: float = 1e-6) -> None:
    """Every tensor equal: floats within ``atol``, the rest (counters) exactly."""
    assert want, "the reference checkpoint holds no weights"
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    differ, worst = {}, 0.0
    for name, ref in want.items():
        value = got[name]
        if value.shape != ref.shape or value.dtype != ref.dtype:
            differ[name] = f"{value.dtype}{list(value.shape)} vs {ref.dtype}{list(ref.shape)}"
        elif ref.is_floating_point():
            diff = (value - ref).abs().max().item() if ref.numel() else 0.0
            if not torch.allclose(value, ref, rtol=0, atol=atol):
                differ[name], worst = f"max |diff| {diff:.3g}", max(worst, diff)
        elif not torch.equal(value, ref):
            differ[name] = f"{(value != ref).sum().item()} of {ref.numel()} entries differ"
    assert not differ, (
        f"{len(differ)} of {len(want)} tensors differ from the uninterrupted run's "
        f"(largest |diff| {worst:.3g}, atol {atol}):\n"
        + "\n".join(f"  {name}: {why}" for name, why in list(differ.items())[:20])
        + (f"\n  ... and {len(differ) - 20} more" if len(differ) > 20 else "")
    )


def test_required_binaries_match_the_makefile():
    """`make slurm-deps` installs the packages when any binary the fixture runs is missing."""
    line = re.search(r"^SLURM_BINARIES := (.*)$", (REPO / "Makefile").read_text(), re.M)
    assert line, "the Makefile has no SLURM_BINARIES"
    assert sorted(line.group(1).split()) == sorted(REQUIRED)
    assert {*DAEMONS, "mungekey"} <= set(REQUIRED)


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_slurm_fails_in_ci_and_skips_elsewhere(ci, monkeypatch):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(slurm_cluster, "_missing", lambda: "SLURM is not installed (x missing)")
    outcome = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(outcome, match="x missing"):
        next(running_cluster())


def test_probe_array_over_two_checkpoints_and_summary(slurm, reference_run, tiny_npz, tmp_path):
    first = reference_run / "checkpoints" / "last.ckpt"
    second = tmp_path / "copy.ckpt"
    second.write_bytes(first.read_bytes())
    sweep = tmp_path / "sweep"
    result = selfsup(
        slurm, "launch", "probe", "--ckpt", f"[{first},{second}]", "--data.path", str(tiny_npz),
        "--out", str(sweep), "--accelerator", "cpu", "--tasks_per_node", "1",
        "--cpus_per_task", "1", "--time", "20", "--", "--epochs", "5", "--data.batch_size", "32",
    )  # fmt: skip
    assert result["n_tasks"] == 2
    slurm.wait(result["job_id"])
    logs = "".join(p.read_text() for p in sweep.glob("slurm-*"))
    for task, ckpt in enumerate((first, second)):
        metrics = json.loads((sweep / f"task-{task}" / "metrics.json").read_text())
        assert metrics["task"] == "probe" and metrics["checkpoint"] == str(ckpt), logs
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", "summary", str(sweep)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| task-")]
    assert len(rows) == 2
    assert len((sweep / "summary.csv").read_text().strip().splitlines()) == 3  # header + 2
