"""A run can never resume the wrong run, and bad input is one line with exit status 2.

- Two methods whose configs share a file name get two run directories.
- A run directory holding another method's run refuses to resume it, before anything
  is written; a resumed run keeps its first config.yaml and records what changed.
- Every bad input a user reported ends in one line naming the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from selfsup.cli import main

QUICK = ["--data.batch_size", "16", "--data.num_workers", "0", "--trainer.precision", "32",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--knn_monitor.every_n_epochs", "0", "--pictures.every_n_epochs", "0",
         "--model.init_args.projection_hidden_dim", "64"]  # fmt: skip


def config(method: str) -> str:
    return str(REPO / "configs" / method / "resnet18_cifar.yaml")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str, command: str) -> str:
    """The command's error: exactly one line, no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith(f"selfsup {command}: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def runs(tiny_npz, tmp_path_factory) -> Path:
    """SimCLR, then triplet, then BYOL, each with its config's default run directory."""
    import os

    root = tmp_path_factory.mktemp("default-dirs")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for method in ("simclr", "triplet", "byol"):
            argv = ["pretrain", "--config", config(method), "--data.path", str(tiny_npz),
                    "--trainer.max_steps", "2", *QUICK]  # fmt: skip
            if method == "byol":
                argv += ["--model.init_args.prediction_hidden_dim", "64"]
            if method == "triplet":
                simclr = root / "runs/simclr/resnet18_cifar"
                before = {p: digest(p) for p in simclr.rglob("*") if p.is_file()}
            assert main(argv) == 0
            if method == "triplet":  # the triplet run touched nothing of SimCLR's
                assert {p: digest(p) for p in simclr.rglob("*") if p.is_file()} == before
    finally:
        os.chdir(cwd)
    return root / "runs"


def test_methods_sharing_a_config_name_get_separate_runs(runs):
    for method, name in (("simclr", "SimCLR"), ("triplet", "Triplet"), ("byol", "BYOL")):
        run = runs / method / "resnet18_cifar"
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["selfsup"]["method"] == name and ckpt["global_step"] == 2
        assert ckpt["selfsup_run"]["run_name"] == f"{method}/resnet18_cifar"
        assert ckpt["selfsup_run"]["seed"] == 0  # the default seed, recorded
        assert f"class_path: selfsup.methods.{name}" in (run / "config.yaml").read_text()


def test_resuming_another_methods_run_is_refused_before_anything_is_written(runs, tiny_npz, capsys):
    run = runs / "simclr" / "resnet18_cifar"
    before = {p: digest(p) for p in run.rglob("*") if p.is_file()}
    for method in ("byol", "triplet"):
        argv = ["pretrain", "--config", config(method), "--data.path", str(tiny_npz),
                "--trainer.default_root_dir", str(run), "--trainer.max_steps", "3", *QUICK]  # fmt: skip
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err, "pretrain")
        assert "holds another run" in line and "SimCLR" in line
        assert "--trainer.default_root_dir" in line and "--resume never" in line
    assert {p: digest(p) for p in run.rglob("*") if p.is_file()} == before


def test_a_resumed_run_keeps_its_first_config_and_records_the_change(
    runs, tiny_npz, capsys, monkeypatch
):
    monkeypatch.chdir(runs.parent)  # config.yaml holds the run directory as it was given
    run = runs / "triplet" / "resnet18_cifar"
    first = (run / "config.yaml").read_text()
    # Resumed from its own resolved config, with one value changed.
    argv = ["pretrain", "--config", str(run / "config.yaml"), "--trainer.max_steps", "3"]
    assert main(argv) == 0
    assert "resuming from" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == first
    changes = (run / "config_changes.txt").read_text()
    assert "# resumed at step 2" in changes
    assert "-  max_steps: 2" in changes and "+  max_steps: 3" in changes
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_the_trainer_saves_through_the_atomic_checkpoint_writer(tiny_npz, tmp_path):
    from selfsup.train.run import build_pretrain_cli
    from selfsup.train.rundir import AtomicCheckpointIO

    cli = build_pretrain_cli(["--config", config("simclr"), "--data.path", str(tiny_npz),
                              "--trainer.default_root_dir", str(tmp_path), *QUICK])  # fmt: skip
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_bad_inputs_are_one_line_and_exit_2(runs, tiny_npz, tmp_path, capsys):
    run = runs / "simclr" / "resnet18_cifar"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    export = tmp_path / "backbone.safetensors"
    assert main(["export", "--ckpt", str(run), "--out", str(export)]) == 0
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(
        "model:\n  class_path: selfsup.methods.SimCLR\n  init_args: {temperature: [0.1\n"
    )
    x, y = np.zeros((20, 32, 32, 3), np.uint8), np.full((20, 3), 2, np.uint8)  # not 0/1
    multi = tmp_path / "multi.npz"
    np.savez(multi, x_train=x, y_train=y, x_test=x, y_test=y)
    fresh = str(tmp_path / "fresh")
    pretrain = ["pretrain", "--config", config("simclr"), "--data.path", str(tiny_npz),
                "--trainer.default_root_dir", fresh, *QUICK]  # fmt: skip
    cases = [
        (["pretrain", "--config", str(bad_yaml)], "bad.yaml is not valid YAML at line 4, column 1"),
        (["probe", "--config", str(bad_yaml), "--ckpt", str(run), "--data.path", str(tiny_npz)],
         "not valid YAML"),
        ([*pretrain, "--trainer.accelerator", "gpu"], "--trainer.accelerator cpu"),
        ([*pretrain, "--model.init_args.temprature", "0.3"], "Did you mean --temperature"),
        ([*pretrain, "--trainer.max_stpes", "3"], "Did you mean --trainer.max_steps"),
        (["knn", "--ckpt", str(truncated), "--data.path", str(tiny_npz)], "truncated"),
        ([*pretrain, "--resume", str(truncated)], "truncated"),
        ([*pretrain, "--resume", str(export)], "is a backbone export"),
        (["probe", "--ckpt", str(run), "--data.path", str(tiny_npz), "--epcohs", "3"],
         "Did you mean --epochs"),
        (["knn", "--ckpt", str(run), "--data.path", str(tiny_npz), "--accelerator", "gpu"], "no GPU"),
        ([*pretrain[:4], str(multi), *pretrain[5:]], "values other than 0 and 1"),
        (["knn", "--ckpt", str(run), "--data.path", str(multi)], "values other than 0 and 1"),
    ]  # fmt: skip
    for argv, message in cases:
        code = main(argv)
        line = one_error_line(capsys.readouterr().err, argv[0])
        assert code == 2 and message in line, (argv, line)
    assert not Path(fresh).exists()  # nothing written by any of them


def test_probe_prints_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["probe", "--print_config"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    for option in ("ckpt:", "data:", "epochs: 100", "val_fraction: 0.1", "augment: false"):
        assert option in printed


def test_probe_takes_its_config_file_and_flags(runs, tiny_npz, tmp_path, capsys):
    run = runs / "simclr" / "resnet18_cifar"
    argv = ["probe", "--config", str(REPO / "configs/eval/probe.yaml"), "--ckpt", str(run),
            "--data.path", str(tiny_npz), "--epochs", "3", "--data.num_workers", "0",
            "--out", str(tmp_path / "probe")]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 3 and result["n_train"] + result["n_val"] == 96
    assert json.loads((tmp_path / "probe" / "metrics.json").read_text())["epochs"] == 3


def test_a_bad_resume_file_is_one_line_before_lightning_or_the_data_say_anything(runs, tmp_path):
    """`selfsup pretrain --resume PATH` with a missing, truncated or foreign file: stderr is
    the one error line (no banner, no data summary), exit status 2, no run directory."""
    import os
    import subprocess
    import sys

    ckpt = (runs / "simclr" / "resnet18_cifar" / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt[: len(ckpt) // 2])
    foreign = tmp_path / "foreign.ckpt"  # loads, but selfsup pretrain did not write it
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    cases = {
        str(tmp_path / "missing.ckpt"): "no such file or directory",
        str(truncated): "it is truncated or not a checkpoint",
        str(foreign): "is not a selfsup training checkpoint",
    }
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for resume, problem in cases.items():
        cmd = [sys.executable, "-m", "selfsup.cli", "pretrain",
               "--config", str(REPO / "configs" / "quickstart.yaml"), "--resume", resume,
               "--trainer.default_root_dir", str(run)]  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        assert lines[0].startswith("selfsup pretrain: error: ") and problem in lines[0], lines[0]
        assert "run directory" in lines[0] or "--resume never" in lines[0]  # the way out
        assert proc.stdout == ""
        assert not run.exists()
