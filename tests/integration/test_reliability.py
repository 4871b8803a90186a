"""Reliability: broken image files, non-finite losses, killed saves, read-only data."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from conftest import REPO, make_blob_images
from selfsup.cli import main

CONFIG = str(REPO / "configs/simclr/resnet18_cifar.yaml")


def pretrain_argv(data, run, *extra):
    return ["pretrain", "--config", CONFIG, "--data.path", str(data), "--data.batch_size", "16",
            "--data.num_workers", "1", "--trainer.accelerator", "cpu", "--trainer.precision", "32",
            "--trainer.enable_progress_bar", "false", "--model.init_args.projection_hidden_dim",
            "64", "--knn_monitor.every_n_epochs", "0", "--trainer.default_root_dir", str(run),
            *extra]  # fmt: skip


def image_folder(root, n=60, seed=0):
    """A labelled folder (train/ and test/, 2 classes) of 32 px images in assorted modes:
    RGB PNG and JPEG, gray, RGBA, CMYK JPEG, 16-bit gray PNG; returns the train files."""
    rng = np.random.default_rng(seed)
    files = []
    for split, count in (("train", n), ("test", 20)):
        for i in range(count):
            cls = f"class{i % 2}"
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            rgb[8:24, 8:24, i % 2] = 255
            kind = i % 6
            path = root / split / cls / f"img{i:03d}.{'jpg' if kind in (1, 4) else 'png'}"
            if kind == 2:
                Image.fromarray(rgb).convert("L").save(path)
            elif kind == 3:
                Image.fromarray(rgb).convert("RGBA").save(path)
            elif kind == 4:
                Image.fromarray(rgb).convert("CMYK").save(path)
            elif kind == 5:
                Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)  # 16-bit
            else:
                Image.fromarray(rgb).save(path)
            files.append(path)
    return [f for f in files if "/train/" in str(f)]


def break_files(files):
    """5 % of 60: an empty file, a truncated JPEG, a text file named .png."""
    empty, truncated, text = files[6], files[7], files[12]
    empty.write_bytes(b"")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    text.write_text("not an image")
    return sorted(str(f) for f in (empty, truncated, text))


def test_image_folder_with_5_percent_broken_files_trains_and_reports(tmp_path, capsys):
    data = tmp_path / "data"
    broken = break_files(image_folder(data))
    run = tmp_path / "run"
    assert main(pretrain_argv(data, run, "--trainer.max_epochs", "2")) == 0
    err = capsys.readouterr().err
    assert "3 unreadable image(s) skipped" in err and "the run skipped 3" in err
    listed = (run / "skipped_images.txt").read_text().splitlines()
    assert sorted(line.split(" (")[0] for line in listed) == broken
    assert all(line.endswith(")") and "Error" in line for line in listed)  # each with its reason
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * (60 // 16) and ckpt["epoch"] == 1  # full batches, to the end
    # Evaluation leaves the broken files out (features and labels) instead of counting the
    # images that stand in for them: 57 training images, and the JSON names the 3 files.
    for task, extra in (("knn", ["--k", "[20]"]), ("probe", ["--epochs", "2"]),
                        ("probe", ["--epochs", "1", "--augment", "true"])):  # fmt: skip
        assert main([task, "--ckpt", str(run), "--data.path", str(data), "--data.num_workers", "0",
                     *extra]) == 0  # fmt: skip
        out, err = capsys.readouterr()
        result = json.loads(out.strip().splitlines()[-1])
        assert result["n_train"] + result.get("n_val", 0) == 57 and result["n_test"] == 20
        assert sorted(result["skipped_images"]) == broken and result["n_skipped"] == 3
        warnings = [line for line in err.splitlines() if line.startswith("selfsup: warning:")]
        assert len(warnings) == 1 and "3 of 60 train images cannot be read" in warnings[0]
        assert result["warnings"] == [warnings[0].removeprefix("selfsup: warning: ")]
    # --data.strict: stop before training with every bad file listed.
    assert main(pretrain_argv(data, tmp_path / "strict", "--data.strict", "true")) == 2
    err = capsys.readouterr().err
    assert "3 of 60 files" in err and all(f in err for f in broken)
    assert not (tmp_path / "strict" / "checkpoints").exists()
    # A split where no file can be read: one line, exit status 2.
    for f in (data / "test").rglob("*.*"):
        f.write_bytes(b"")
    assert (
        main(["knn", "--ckpt", str(run), "--data.path", str(data), "--data.num_workers", "0"]) == 2
    )
    err = capsys.readouterr().err
    assert "None of the 20 image files" in err and "Traceback" not in err


def test_class_names_one_class_and_a_large_k_reach_the_json(tmp_path, capsys):
    x_train, y_train = make_blob_images(48, 32, seed=0)
    x_test, y_test = make_blob_images(24, 32, seed=1)
    names = np.array(["cat", "dog", "eel", "fox"])
    data = tmp_path / "named.npz"
    np.savez(data, x_train=x_train, y_train=names[y_train], x_test=x_test, y_test=names[y_test])
    run = tmp_path / "run"
    assert main(pretrain_argv(data, run, "--trainer.max_steps", "2")) == 0
    capsys.readouterr()
    assert (
        main(["knn", "--ckpt", str(run), "--data.path", str(data), "--data.num_workers", "0"]) == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["classes"] == list(names) and sorted(result["per_class_accuracy"]) == list(names)
    metrics = json.loads((run / "eval" / "knn-named" / "metrics.json").read_text())
    assert metrics["classes"] == list(names) and sum(map(sum, metrics["confusion_matrix"])) == 24
    # One class and 12 training images under k = 20: the figure stands, with two warnings.
    one = tmp_path / "one.npz"
    np.savez(one, x_train=x_train[:12], y_train=np.array(["cat"] * 12), x_test=x_test[:6],
             y_test=np.array(["cat"] * 6))  # fmt: skip
    for task, extra in (("knn", ["--k", "[20]"]), ("probe", ["--epochs", "1"])):
        assert main([task, "--ckpt", str(run), "--data.path", str(one), "--data.num_workers", "0",
                     *extra]) == 0  # fmt: skip
        out, err = capsys.readouterr()
        result = json.loads(out.strip().splitlines()[-1])
        assert result["top1"] == 1.0 and result["classes"] == ["cat"]
        lines = [line for line in err.splitlines() if line.startswith("selfsup: warning:")]
        assert lines == [f"selfsup: warning: {w}" for w in result["warnings"]]
        assert "the training split has one class (cat)" in lines[0]
        assert len(lines) == (2 if task == "knn" else 1)
        if task == "knn":
            assert "k = 20 but there are only 12 training images" in lines[1]
    # Several findings per image with an "uncertain" -1: refused in one line before anything runs.
    multi = tmp_path / "multi.npz"
    findings = np.zeros((48, 5), np.int8)
    findings[3, 2] = -1
    np.savez(multi, x_train=x_train, y_train=findings, x_test=x_test,
             y_test=np.zeros((24, 5), np.int8))  # fmt: skip
    assert (
        main(["knn", "--ckpt", str(run), "--data.path", str(multi), "--data.num_workers", "0"]) == 2
    )
    err = capsys.readouterr().err
    assert "values other than 0 and 1" in err and "-1 for 'uncertain'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_no_command_writes_into_the_data_directory(tmp_path, capsys):
    data = tmp_path / "data"
    image_folder(data, n=40)

    def snapshot():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in data.rglob("*"))

    before = snapshot()
    run = tmp_path / "run"
    assert main(pretrain_argv(data, run, "--trainer.max_steps", "2")) == 0
    for task in ("knn", "probe"):
        extra = ["--epochs", "2"] if task == "probe" else []
        assert main([task, "--ckpt", str(run), "--data.path", str(data), "--data.num_workers", "0",
                     *extra]) == 0  # fmt: skip
    assert main(["export", "--ckpt", str(run), "--out", str(tmp_path / "b.safetensors")]) == 0
    assert snapshot() == before
    # Outputs went to the run directory (and the export where asked), nowhere else
    # (the test's own cache and wandb directories aside).
    names = {p.name for p in tmp_path.iterdir()} - {"selfsup-cache", "wandb-cache", "wandb-config"}
    assert names == {"b.safetensors", "data", "run"}
    assert {p.name for p in (run / "eval").iterdir()} == {"knn-data", "probe-data"}


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(
    tiny_npz, tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(pretrain_argv(tiny_npz, run, "--trainer.max_steps", "2")) == 0
    # A temperature of 0 turns the logits into inf: the loss is NaN at the next step.
    code = main(pretrain_argv(tiny_npz, run, "--trainer.max_steps", "6",
                              "--model.init_args.temperature", "0.0"))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "The loss is nan at step 2" in err
    assert "temperature 0.0" in err and "learning rate" in err
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


SAVER = """
import sys, torch
from selfsup.train.rundir import AtomicCheckpointIO
io, step = AtomicCheckpointIO(), 0
big = torch.randn(40_000_000)  # 160 MB: a save takes a while
while True:
    step += 1
    io.save_checkpoint({"global_step": step, "weights": big}, sys.argv[1])
    print(step, flush=True)
"""


def test_a_process_killed_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete save
        deadline = time.monotonic() + 60
        while not path.with_name("last.ckpt.tmp").exists():  # the next save is under way
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] >= 1 and ckpt["weights"].numel() == 40_000_000
