"""`selfsup launch` without a cluster: the rendered job scripts, time limits, bad input;
and the run directory's safety nets (atomic checkpoints, graceful stop, newest checkpoint)."""

import re

import pytest
import torch

from conftest import REPO
from selfsup.checkpoints import newest_checkpoint
from selfsup.cli import main
from selfsup.commands.launch import packaged_template, render, time_seconds
from selfsup.errors import ConfigError
from selfsup.train.rundir import AtomicCheckpointIO
from selfsup.train.signals import GracefulStop

CONFIG = str(REPO / "configs/dino/vit_small_imagenet.yaml")


def sbatch_option(script: str, name: str) -> str:
    return re.search(rf"^#SBATCH --{name}=(\S+)$", script, re.M).group(1)


def test_dry_run_for_2_nodes_x_4_gpus_matches_trainer_and_job(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["launch", "pretrain", "--nodes", "2", "--gpus_per_node", "4", "--cpus_per_task", "8",
            "--time", "2-00:00:00", "--partition", "gpu", "--account", "lab", "--run_dir", str(run),
            "--dry_run", "true", "--", "--config", CONFIG, "--data.batch_size", "64"]  # fmt: skip
    assert main(argv) == 0
    script = capsys.readouterr().out
    assert sbatch_option(script, "nodes") == "2" and sbatch_option(script, "ntasks-per-node") == "4"
    assert sbatch_option(script, "gpus-per-node") == "4"
    assert sbatch_option(script, "partition") == "gpu" and sbatch_option(script, "account") == "lab"
    assert sbatch_option(script, "signal") == "USR1@300"
    assert "#SBATCH --requeue" in script and "#SBATCH --open-mode=append" in script
    assert sbatch_option(script, "output") == f"{run}/slurm-%j.out"
    assert "--trainer.num_nodes 2" in script and "--trainer.devices 4" in script
    assert "--trainer.strategy ddp" in script and "--resume auto" in script
    assert 'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK}"' in script
    assert "global batch 512 = data.batch_size 64 x 2 node(s) x 4 task(s)" in script
    assert "{{" not in script.split("#SBATCH")[-1]
    assert not run.exists()  # a dry run writes nothing


def test_cpu_jobs_have_no_gpu_request_and_bad_shapes_fail_early(tmp_path, capsys):
    base = ["launch", "pretrain", "--run_dir", str(tmp_path / "r"), "--dry_run", "true"]
    config = ["--", "--config", CONFIG]
    assert (
        main([*base, "--accelerator", "cpu", "--tasks_per_node", "2", "--time", "30", *config]) == 0
    )
    script = capsys.readouterr().out
    assert "--gpus-per-node" not in script and sbatch_option(script, "ntasks-per-node") == "2"
    assert "--trainer.accelerator cpu" in script
    cases = [
        (["--time", "10", "--signal_seconds", "600"], "not shorter than --time"),
        (["--time", "tomorrow"], "SLURM's format"),
        (["--gpus_per_node", "4", "--tasks_per_node", "2"], "one task per GPU"),
        (["--nodes", "0"], "--nodes 0"),
    ]
    for extra, message in cases:
        assert main([*base, *extra, *config]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert main([*base, *config]) == 2 and "already holds a run" in capsys.readouterr().err


def test_probe_sweep_dry_run_lists_one_task_per_checkpoint(tmp_path, capsys):
    ckpts = [tmp_path / f"c{i}.ckpt" for i in range(3)]
    for c in ckpts:
        c.write_bytes(b"x")
    argv = ["launch", "probe", "--ckpt", str(tmp_path / "c*.ckpt"), "--data.path", "cifar10",
            "--out", str(tmp_path / "sweep"), "--dry_run", "true", "--", "--epochs", "50"]  # fmt: skip
    assert main(argv) == 0
    script = capsys.readouterr().out
    assert sbatch_option(script, "array") == "0-2" and "--epochs 50" in script
    assert all(f"# task {i}: {c}" in script for i, c in enumerate(ckpts))
    assert main(["launch", "probe", "--ckpt", str(tmp_path / "none.ckpt"), "--data.path", "x",
                 "--dry_run", "true"]) == 2  # fmt: skip


def test_time_limits_and_templates():
    assert time_seconds("30") == 1800 and time_seconds("5:30") == 330
    assert time_seconds("4:00:00") == 14400 and time_seconds("2-00:00:00") == 172800
    assert time_seconds("1-12") == 129600 and time_seconds("UNLIMITED") is None
    with pytest.raises(ConfigError, match="fields no option fills"):
        render(packaged_template("pretrain.sbatch"), {"nodes": 1})
    with pytest.raises(ConfigError, match="not found: pass --template"):
        render(REPO / "launch" / "no-such.sbatch", {})


def test_template_option_overrides_the_packaged_one(tmp_path, capsys):
    own = tmp_path / "own.sbatch"
    own.write_text("#!/bin/bash\n#SBATCH --nodes={{nodes}}\n# mine: {{job_name}}\n")
    argv = ["launch", "pretrain", "--nodes", "3", "--template", str(own),
            "--run_dir", str(tmp_path / "run"), "--dry_run", "true", "--", "--config", CONFIG]  # fmt: skip
    assert main(argv) == 0
    script = capsys.readouterr().out
    assert "# mine: selfsup-vit_small_imagenet" in script and sbatch_option(script, "nodes") == "3"
    assert "srun" not in script  # nothing of the packaged template


def test_atomic_checkpoint_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 5}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        io.save_checkpoint({"global_step": 6, "bad": lambda: 0}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 5
    assert not (tmp_path / "last.ckpt.tmp").exists()  # the failed write left nothing
    assert newest_checkpoint(tmp_path.parent / "nothing-here") is None


def test_newest_checkpoint_is_the_highest_step_and_skips_unreadable_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"global_step": 7}, tmp_path / "checkpoints" / "last.ckpt")
    torch.save({"global_step": 9}, tmp_path / "hpc_ckpt_1.ckpt")
    assert newest_checkpoint(tmp_path).name == "hpc_ckpt_1.ckpt"
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        assert newest_checkpoint(tmp_path).name == "hpc_ckpt_1.ckpt"
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"truncated")
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="none of them loads"):
        newest_checkpoint(tmp_path)


def test_graceful_stop_saves_at_the_step_end_and_never_a_non_finite_state(tmp_path, capsys):
    import signal

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    class FakeTrainer:
        world_size, is_global_zero, global_step = 1, True, 3

        def __init__(self):
            self.saved = []
            self.accumulating = False  # inside a gradient-accumulation window
            self.fit_loop = type("Loop", (), {"_should_accumulate": lambda _: self.accumulating})()

        def save_checkpoint(self, path):
            self.saved.append(path)

    module = torch.nn.Linear(2, 2)
    stop, trainer = GracefulStop(tmp_path), FakeTrainer()
    stop.on_train_start(trainer, module)
    try:
        stop.on_train_batch_end(trainer, module)  # no signal: nothing happens
        assert trainer.saved == []
        signal.raise_signal(signal.SIGTERM)  # the handler only sets a flag...
        trainer.accumulating = True  # ...not acted on inside an accumulation window...
        stop.on_train_batch_end(trainer, module)
        assert trainer.saved == []
        trainer.accumulating = False
        with pytest.raises(SIGTERMException):  # ...but at the end of the stepping batch
            stop.on_train_batch_end(trainer, module)
        assert trainer.saved == [str(tmp_path / "checkpoints" / "last.ckpt")]
        with torch.no_grad():
            module.weight[0, 0] = float("nan")
        with pytest.raises(SIGTERMException):
            stop.on_train_batch_end(trainer, module)
        assert len(trainer.saved) == 1 and "non-finite" in capsys.readouterr().err
    finally:
        stop.on_exception(trainer, module, SIGTERMException())
    assert signal.getsignal(signal.SIGTERM) is not stop._on_stop  # handlers restored
