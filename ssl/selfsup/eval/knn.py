"""``selfsup knn``: weighted kNN of a checkpoint's features, train split as memory bank, test split as queries."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.data.datasets import open_dataset
from selfsup.data.module import TransformedDataset, default_num_workers
from selfsup.errors import ConfigError
from selfsup.eval.loading import LoadedBackbone
from selfsup.knn import knn_scores


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, D)`` and labels ``(N,)`` of a labelled dataset of eval views."""
    workers = default_num_workers() if num_workers is None else num_workers
    feats, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        feats.append(backbone(x).float())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)


def run_knn(
    loaded: LoadedBackbone,
    data: str,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 256,
    num_workers: int | None = None,
    root: str | None = None,
) -> dict[str, Any]:
    transform = loaded.eval_transform()
    train = open_dataset(data, "train", root)
    test = open_dataset(data, "test", root)
    if train.targets is None:
        raise ConfigError(
            f"{data} has no labels: kNN evaluation needs labelled train and test splits."
        )
    train_f, train_y = extract_features(
        loaded.backbone, TransformedDataset(train, transform), batch_size, num_workers
    )
    test_f, test_y = extract_features(
        loaded.backbone, TransformedDataset(test, transform), batch_size, num_workers
    )
    num_classes = max(len(train.classes), int(train_y.max()) + 1, int(test_y.max()) + 1)
    scores = knn_scores(train_f, train_y, test_f, num_classes, ks, temperature)
    acc = {k: (s.argmax(1) == test_y).float().mean().item() for k, s in scores.items()}
    result: dict[str, Any] = {"task": "knn", "top1": acc[ks[0]]}
    result.update({f"top1_k{k}": acc[k] for k in ks[1:]})
    result.update(
        k=ks[0],
        temperature=temperature,
        n_train=len(train),
        n_test=len(test),
        backbone=loaded.meta["loaded"],
        pool=loaded.meta["pool"],
        checkpoint=loaded.path,
    )
    return result
