"""`selfsup pretrain` from existing weights, end to end: the summary says every adaptation,
the kNN monitor measures the starting weights, the checkpoint records the source; weights
that do not fit and an offline timm tag stop before training with one line."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import REPO
from selfsup.cli import main

VIT_CONFIG = str(REPO / "configs" / "simclr" / "vit_tiny_cifar.yaml")
FAST = ["--data.batch_size", "16", "--data.num_workers", "0", "--trainer.precision", "32",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.init_args.projection_hidden_dim", "64", "--model.init_args.backbone_kwargs",
        '{"img_size": 32, "patch_size": 4, "depth": 2}', "--pictures.every_n_epochs", "0",
        "--trainer.log_every_n_steps", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A 224 px, patch-16 timm ViT-Tiny (2 blocks) with random weights and a classifier:
    the stand-in for a released checkpoint."""
    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, depth=2)
    path = tmp_path_factory.mktemp("weights") / "vit_tiny_released.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def pretrain(run, data, *extra):
    return main(["pretrain", "--config", VIT_CONFIG, "--data.path", str(data),
                 "--trainer.default_root_dir", str(run), *FAST, *extra])  # fmt: skip


def test_pretrain_from_released_weights_says_the_adaptations(released, tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "2", "--model.init_args.init_from",
                    str(released)) == 0  # fmt: skip
    captured = capsys.readouterr()
    said = [ln for ln in captured.err.splitlines() if ln.startswith("selfsup: init ")]
    assert said[0].startswith(f"selfsup: init weights from {released} (sha256 ")
    text = "\n".join(said)
    assert "14x14 to a 8x8 patch grid" in text and "16x16 to 4x4 patches" in text
    assert "classifier head dropped (head.bias, head.weight)" in text
    assert (run / "init_from.txt").read_text().splitlines() == [
        ln[len("selfsup: init ") :] for ln in said
    ]
    out = captured.out + captured.err
    assert "   init weights: " in out and "random-init" not in out
    assert "val/knn_top1_init" in (run / "metrics.csv").read_text().splitlines()[0]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    record = ckpt["selfsup"]["init_from"]
    assert record["sha256"] == hashlib.sha256(released.read_bytes()).hexdigest()
    assert record["source"] == str(released) and record["not_loaded"] == 0
    assert (
        main(["knn", "--ckpt", str(run), "--data.path", str(tiny_npz), "--data.num_workers", "0"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["init_from"]["sha256"] == record["sha256"]  # the evaluator says where it began


def test_weights_that_do_not_fit_stop_before_training(released, tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    code = pretrain(run, tiny_npz, "--trainer.max_steps", "2", "--model.init_args.init_from",
                    str(released), "--model.init_args.backbone_kwargs",
                    '{"img_size": 32, "patch_size": 4, "depth": 3}')  # fmt: skip
    err = [
        ln
        for ln in capsys.readouterr().err.splitlines()
        if ln.strip() and "selfsup: data" not in ln
    ]
    assert code == 2 and len(err) == 1 and "missing blocks.N.*" in err[0], err
    assert not (run / "checkpoints").exists()
    # init_strict false: the keys that fit load, the rest is listed in the run directory.
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "1", "--model.init_args.init_from",
                    str(released), "--model.init_args.init_strict", "false",
                    "--model.init_args.backbone_kwargs",
                    '{"img_size": 32, "patch_size": 4, "depth": 3}') == 0  # fmt: skip
    listed = (run / "init_from.txt").read_text()
    assert "missing (start fresh): blocks.2.attn.qkv.weight" in listed


def test_an_offline_timm_tag_is_one_line_within_seconds(tiny_npz, tmp_path, capsys):
    start = time.monotonic()
    code = pretrain(tmp_path / "run", tiny_npz, "--trainer.max_steps", "1",
                    "--model.init_args.init_from", "timm:vit_tiny_patch16_224.augreg_in21k")  # fmt: skip
    elapsed = time.monotonic() - start
    err = [
        ln
        for ln in capsys.readouterr().err.splitlines()
        if ln.strip() and "selfsup: data" not in ln
    ]
    assert code == 2 and len(err) == 1, err
    assert "vit_tiny_patch16_224.augreg_in21k" in err[0] and "init_from: w.pth" in err[0]
    assert elapsed < 60  # no download retry loop (the data and model setup take most of it)
    json.dumps(err)  # plain text


def test_a_hub_export_round_trip_starts_where_the_first_run_ended(tmp_path, capsys):
    """Run A -> `selfsup export --format timm-hub` -> run B with init_from that directory:
    B's step-0 kNN equals A's final kNN (labels are random, so the figure moves with any
    change in the features)."""
    import csv

    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "noise.npz"
    np.savez(data, x_train=rng.integers(0, 255, (96, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 4, 96), x_test=rng.integers(0, 255, (256, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 4, 256))  # fmt: skip

    def knn(run, column):
        with open(run / "metrics.csv", newline="") as f:
            return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]

    a, b, hub = tmp_path / "a", tmp_path / "b", tmp_path / "hub"
    assert pretrain(a, data, "--trainer.max_steps", "6", "--model.init_args.base_lr", "0.01") == 0
    assert knn(a, "val/knn_top1")[-1] != knn(a, "val/knn_top1_random_init")[0]  # it moved
    assert main(["export", "--ckpt", str(a), "--out", str(hub), "--format", "timm-hub"]) == 0
    assert (
        pretrain(b, data, "--trainer.max_steps", "1", "--model.init_args.init_from", str(hub)) == 0
    )
    capsys.readouterr()
    assert knn(b, "val/knn_top1_init") == [knn(a, "val/knn_top1")[-1]]
