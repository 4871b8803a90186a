"""Shared fixtures: small synthetic data that the tests make themselves."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Never touch the network or a real wandb account from tests.
os.environ.setdefault("WANDB_MODE", "offline")

# Under pytest-xdist (`make test`) the workers share the cores: each worker, and every
# subprocess it starts, gets its share of them rather than all of them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    torch.set_num_threads(_share)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_blob_images(
    n: int, size: int, seed: int, n_classes: int = 4, channels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent coloured squares on noise: ``(n, size, size, C)`` uint8 and labels."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % n_classes).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size, channels), dtype=np.int64)
    for i, y in enumerate(labels):
        s = size // 3
        r, c = rng.integers(0, size - s, 2)
        images[i, r : r + s, c : c + s] = 255 * np.array([y & 1, (y >> 1) & 1, 1])[:channels]
    return images.astype(np.uint8), labels


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    """A 32 px labelled npz in selfsup's format: 96 train / 48 test images, 4 classes."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    x_train, y_train = make_blob_images(96, 32, seed=0)
    x_test, y_test = make_blob_images(48, 32, seed=1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def random_simclr_checkpoint(path: Path, in_chans: int = 3, image_size: int = 32) -> Path:
    """A SimCLR ResNet-18 (CIFAR stem) at random init (seed 0), saved as selfsup saves
    checkpoints: what the evaluators' tests evaluate without pretraining."""
    from selfsup.methods import SimCLR

    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True, "in_chans": in_chans},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    meta = {**model.checkpoint_metadata(), "image_size": image_size}
    torch.save({"state_dict": model.state_dict(), "selfsup": meta}, path)
    return path


def make_segmentation_set(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gray images with a bright square (class 1) and a dim disc (class 2) on dark noise:
    ``(n, size, size)`` uint8 images and their class-index masks (some images lack a class)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        if i % 5 != 4:  # every fifth image has no square
            s = int(rng.integers(size // 5, size // 2))
            r, c = rng.integers(0, size - s, 2)
            masks[i, r : r + s, c : c + s] = 1
        cy, cx, radius = *rng.uniform(size * 0.25, size * 0.75, 2), rng.uniform(size / 8, size / 5)
        masks[i][((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (masks[i] == 0)] = 2
    images[masks == 1] = 230
    images[masks == 2] = 130
    return images, masks


@pytest.fixture(scope="session")
def seg_npz(tmp_path_factory) -> Path:
    """A 32 px segmentation npz: 40 train / 12 test images, classes background, square,
    disc, 10 training patients of 4 images, 0.5 x 0.8 mm pixels."""
    path = tmp_path_factory.mktemp("data") / "seg.npz"
    x_train, m_train = make_segmentation_set(40, 32, seed=0)
    x_test, m_test = make_segmentation_set(12, 32, seed=1)
    np.savez(path, x_train=x_train, m_train=m_train, x_test=x_test, m_test=m_test,
             mask_classes=np.array(["background", "square", "disc"]),
             groups_train=np.array([f"p{i // 4}" for i in range(40)]),
             groups_test=np.array([f"t{i // 4}" for i in range(12)]), spacing=np.array([0.5, 0.8]))  # fmt: skip
    return path


@pytest.fixture(autouse=True)
def _wandb_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "selfsup-cache"))  # never ~/.cache


def ddp_pretrain(
    config: str, data: Path, run: Path, *extra: str, pythonpath: str = ""
) -> subprocess.CompletedProcess:
    """`selfsup pretrain` with two CPU processes (gloo) in a subprocess: Lightning's DDP
    re-runs sys.argv for rank 1, which must not be pytest."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "selfsup.cli", "pretrain", "--config", str(REPO / config),
           "--data.path", str(data), "--data.batch_size", "8", "--data.num_workers", "0",
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.precision", "32", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(run), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=run.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def naive_weighted_knn(train, train_y, test, k, t, num_classes):
    """Weighted kNN predictions written from the formula: each query's k most cosine-similar
    training features vote with weight exp(similarity / t)."""
    preds = []
    for q in test:
        sims = [(float(q @ x / (q.norm() * x.norm())), int(y)) for x, y in zip(train, train_y)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for s, y in sims[:k]:
            votes[y] += math.exp(s / t)
        preds.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(preds)


class TwoViews(torch.utils.data.Dataset):
    """Eight samples of two seeded random 16 px views each, label 0: a loader for a method's
    training step in unit tests."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return [torch.randn(3, 16, 16, generator=g), torch.randn(3, 16, 16, generator=g)], 0
