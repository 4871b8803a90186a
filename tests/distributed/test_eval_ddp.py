"""kNN and the cached-feature probe: two CPU processes (Lightning Fabric, gloo) against one."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import free_port, random_simclr_checkpoint
from selfsup.cli import main
from selfsup.methods import SimCLR


@pytest.fixture
def evaluate(capsys):
    """``selfsup TASK`` on one process (this one, single-threaded like each of the two:
    its libraries are already imported) or on two (a subprocess, which Lightning Fabric
    splits in two); the one JSON line it prints."""

    def run(task: str, ckpt, data, devices: int, *extra: str) -> dict:
        argv = [task, "--ckpt", str(ckpt), "--data.path", str(data), "--devices", str(devices),
                "--accelerator", "cpu", "--data.num_workers", "0", "--data.batch_size", "16", *extra]  # fmt: skip
        if devices == 1:
            capsys.readouterr()
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                assert main(argv) == 0
            finally:
                torch.set_num_threads(threads)
            stdout = capsys.readouterr().out
        else:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
            proc = subprocess.run([sys.executable, "-m", "selfsup.cli", *argv], env=env,
                                  capture_output=True, text=True, timeout=300)  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            stdout = proc.stdout
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1, stdout  # one JSON line, from rank 0 only
        return json.loads(lines[0])

    return run


def test_one_and_two_processes_give_the_same_knn_and_probe(evaluate, tiny_npz, tmp_path):
    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    ckpt = tmp_path / "simclr.ckpt"
    meta = {**model.checkpoint_metadata(), "image_size": 32}
    torch.save({"state_dict": model.state_dict(), "selfsup": meta}, ckpt)
    # 96 train / 48 test images: with 2 processes and batches of 16 a DistributedSampler
    # would pad; every image must still count exactly once.
    one = evaluate("knn", ckpt, tiny_npz, 1, "--cache", "false")
    two = evaluate("knn", ckpt, tiny_npz, 2, "--cache", "false")
    assert (one["n_train"], one["n_test"]) == (two["n_train"], two["n_test"]) == (96, 48)
    assert one["top1"] == two["top1"] and one["top1_k200"] == two["top1_k200"]
    probe_args = ("--epochs", "5", "--out", str(tmp_path / "probe"))
    p1 = evaluate("probe", ckpt, tiny_npz, 1, "--cache", "false", *probe_args)
    p2 = evaluate("probe", ckpt, tiny_npz, 2, *probe_args)  # fills the cache
    p3 = evaluate("probe", ckpt, tiny_npz, 1, *probe_args)  # reads it
    assert p1["n_train"] + p1["n_val"] == 96 and p1["n_test"] == 48
    for p in (p2, p3):
        assert p["top1"] == p1["top1"] and p["val_top1"] == p1["val_top1"] and p["lr"] == p1["lr"]
    assert (tmp_path / "probe" / "metrics.json").is_file()
    assert (tmp_path / "probe" / "confusion_matrix.png").is_file()
    assert len(list((tmp_path / "selfsup-cache" / "features").glob("*.pt"))) == 2  # train, test
    # --augment: every process embeds its part of each batch and takes the same head
    # steps; the views are seeded per image, so the result does not depend on the count.
    aug = ("--augment", "true", "--epochs", "2", "--out", str(tmp_path / "aug"))
    a1 = evaluate("probe", ckpt, tiny_npz, 1, *aug)
    a2 = evaluate("probe", ckpt, tiny_npz, 2, *aug)
    assert a1["augment"] and a1["n_train"] == p1["n_train"]
    assert a1["grid_val_top1"] == a2["grid_val_top1"] and a1["top1"] == a2["top1"]


def test_one_and_two_processes_give_the_same_multilabel_figures(evaluate, tmp_path):
    import numpy as np

    from conftest import make_blob_images

    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    ckpt = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": model.state_dict(),
                "selfsup": {**model.checkpoint_metadata(), "image_size": 32}}, ckpt)  # fmt: skip
    # 75 train / 37 test images (odd: uneven shards), three overlapping findings, patients.
    x_train, c_train = make_blob_images(75, 32, seed=0)
    x_test, c_test = make_blob_images(37, 32, seed=1)

    def findings(c):
        return np.stack([c & 1, (c >> 1) & 1, c == 3], 1).astype(np.uint8)

    data = tmp_path / "findings.npz"
    np.savez(data, x_train=x_train, y_train=findings(c_train), x_test=x_test,
             y_test=findings(c_test), groups_train=np.arange(75) // 3)  # fmt: skip
    for task, extra in (("knn", ()), ("probe", ("--epochs", "3"))):
        one = evaluate(
            task, ckpt, data, 1, "--cache", "false", "--out", str(tmp_path / task), *extra
        )
        two = evaluate(
            task, ckpt, data, 2, "--cache", "false", "--out", str(tmp_path / task), *extra
        )
        assert one["headline"]["metric"] == "macro_auroc" and one["n_test"] == two["n_test"] == 37
        for key in ("auroc", "average_precision", "macro_auroc", "micro_auroc", "mAP"):
            assert one[key] == two[key], key


def test_one_and_two_processes_give_the_same_segmentation_figures(evaluate, seg_npz, tmp_path):
    """40 + 12 images over two processes: the dense features are gathered in dataset
    order, so the heads and every figure equal one process's."""
    ckpt = random_simclr_checkpoint(tmp_path / "simclr.ckpt", in_chans=1)
    args = ("--cache", "false", "--epochs", "3", "--out", str(tmp_path / "seg"))
    one = evaluate("segment", ckpt, seg_npz, 1, *args)
    two = evaluate("segment", ckpt, seg_npz, 2, *args)
    assert one["n_test"] == two["n_test"] == 12
    assert one["grid_val_mean_foreground_dice"] == two["grid_val_mean_foreground_dice"]
    assert one["per_class"] == two["per_class"]
