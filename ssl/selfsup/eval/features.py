"""Frozen-backbone features for the evaluators: sharded over processes, cached on disk.

Each process embeds every ``world_size``-th image (no DistributedSampler padding,
so no image counts twice); the shards are gathered and put back in dataset order,
so 1 and N processes give the same feature matrix. The cache lives in
``$SELFSUP_CACHE`` (default ``~/.cache/selfsup/features``), never beside the data,
keyed by the checkpoint file (path, size, mtime), the weights and pooling used,
the data (path, size, mtime), the split and the eval transform.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data.datasets import open_dataset
from selfsup.data.module import TransformedDataset, default_num_workers
from selfsup.distributed import gather_uneven, rank, world_size
from selfsup.errors import ConfigError


def cache_dir() -> Path:
    return Path(os.environ.get("SELFSUP_CACHE", Path.home() / ".cache" / "selfsup")) / "features"


def _file_id(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.is_file():
        stat = p.stat()
        return {"path": str(p.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    return {"name": path}  # a named data set (cifar10, patterns, ...)


def cache_key(loaded: Any, data: str, split: str, transform: Any) -> str:
    parts = {
        "checkpoint": _file_id(loaded.path),
        "weights": loaded.meta.get("loaded"),
        "pool": loaded.meta.get("pool"),
        "data": _file_id(data),
        "split": split,
        "transform": [int(transform.size), list(loaded.meta.get("mean") or []),
                      list(loaded.meta.get("std") or [])],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, D)`` and labels ``(N,)`` of a labelled dataset of eval views, in
    dataset order, on every process (each process embeds its shard)."""
    workers = default_num_workers() if num_workers is None else num_workers
    indices = torch.arange(rank(), len(dataset), world_size())
    shard = Subset(dataset, indices.tolist())
    feats, labels = [], []
    backbone = backbone.to(device)
    for x, y in DataLoader(shard, batch_size=batch_size, num_workers=workers):
        feats.append(backbone(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    dim = getattr(backbone, "embed_dim", 0)
    local_f = torch.cat(feats) if feats else torch.zeros(0, dim)
    local_y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    # Back in dataset order, whatever the number of processes.
    order = gather_uneven(indices.to(device)).cpu()
    all_f = gather_uneven(local_f.to(device)).cpu()
    all_y = gather_uneven(local_y.to(device)).cpu()
    inverse = torch.argsort(order)
    return all_f[inverse], all_y[inverse]


def cached_features(
    loaded: Any,
    data: str,
    split: str,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`extract_features` through the on-disk cache; the flag says whether it hit."""
    transform = loaded.eval_transform()
    path = cache_dir() / f"{cache_key(loaded, data, split, transform)}.pt"
    if use_cache and path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        return cached["features"], cached["labels"], True
    feats, labels = extract_features(
        loaded.backbone, TransformedDataset(dataset, transform), batch_size, num_workers, device
    )
    if use_cache and rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": feats, "labels": labels}, tmp)
        os.replace(tmp, path)  # never a half-written cache file
    return feats, labels, False


def labelled_features(
    loaded: Any,
    data: str,
    task: str,
    batch_size: int = 256,
    num_workers: int | None = None,
    root: str | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Train and test features and labels of a labelled data set, and its class names."""
    train = open_dataset(data, "train", root)
    test = open_dataset(data, "test", root)
    if train.targets is None or test.targets is None:
        raise ConfigError(f"{data} has no labels: {task} needs labelled train and test splits.")
    train_f, train_y, _ = cached_features(
        loaded, data, "train", train, batch_size, num_workers, use_cache, device
    )
    test_f, test_y, _ = cached_features(
        loaded, data, "test", test, batch_size, num_workers, use_cache, device
    )
    return train_f, train_y, test_f, test_y, list(train.classes)
