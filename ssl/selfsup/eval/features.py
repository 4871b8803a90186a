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
        "features": loaded.meta.get("features"),
        "backbone": loaded.meta.get("backbone"),
        "data": _file_id(data),
        "split": split,
        "transform": [int(transform.size), list(loaded.meta.get("mean") or []),
                      list(loaded.meta.get("std") or [])],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class LastBlocksFeatures(torch.nn.Module):
    """ViT features from the last ``n_blocks`` blocks, as DINO's linear evaluation takes
    them: each block's pooled token (its CLS token, or the mean of its patch tokens for
    ``pool='avg'``) after the final norm, concatenated, and optionally the mean of the
    last block's patch tokens appended (DINO: 4 blocks for ViT-S, 1 block + patches for
    ViT-B). Blocks come from timm's ``forward_intermediates``; ``n_blocks=1`` without
    patches equals the backbone's own pooled output."""

    def __init__(self, backbone: Any, n_blocks: int = 4, avgpool_patches: bool = False) -> None:
        super().__init__()
        if not getattr(backbone, "is_vit", False):
            raise ConfigError(
                "--last-blocks and --avgpool-patches apply to ViTs; a ResNet has one pooled feature."
            )
        depth = len(backbone.model.blocks)
        if not 1 <= n_blocks <= depth:
            raise ConfigError(
                f"--last-blocks {n_blocks}: the ViT has {depth} blocks; give 1..{depth}."
            )
        if avgpool_patches and backbone.pool == "avg":
            raise ConfigError(
                "--avgpool-patches adds the patch mean to CLS tokens, but this backbone pools by "
                "patch mean already: use --pool cls, or drop --avgpool-patches."
            )
        self.backbone, self.n_blocks, self.avgpool_patches = backbone, n_blocks, avgpool_patches
        self.embed_dim = backbone.embed_dim * (n_blocks + int(avgpool_patches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix = self.backbone.num_prefix_tokens > 0
        blocks = self.backbone.model.forward_intermediates(
            x, indices=self.n_blocks, norm=True, return_prefix_tokens=prefix,
            output_fmt="NLC", intermediates_only=True,
        )  # fmt: skip  # per block: (patch tokens (B, N, D), prefix tokens (B, P, D)) or patches
        if not prefix:
            blocks = [(patches, None) for patches in blocks]
        if self.backbone.pool == "cls":
            feats = [tokens[:, 0] for _, tokens in blocks]
        else:
            feats = [patches.mean(1) for patches, _ in blocks]
        if self.avgpool_patches:
            feats.append(blocks[-1][0].mean(1))
        return torch.cat(feats, dim=-1)


def block_features(loaded: Any, n_blocks: int, avgpool_patches: bool) -> Any:
    """``loaded`` with its backbone's output replaced by :class:`LastBlocksFeatures`
    (unchanged for one block without patches); the choice enters the cache key."""
    if n_blocks == 1 and not avgpool_patches:
        return loaded
    features = LastBlocksFeatures(loaded.backbone, n_blocks, avgpool_patches)
    name = f"last{n_blocks}" + ("+avgpatch" if avgpool_patches else "")
    return type(loaded)(features.eval(), {**loaded.meta, "features": name}, loaded.path)


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
