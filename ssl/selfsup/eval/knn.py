"""``selfsup knn``: weighted kNN of a checkpoint's features, train split as memory bank, test split as queries."""

from __future__ import annotations

from typing import Any

import torch

from selfsup.data.datasets import open_dataset
from selfsup.errors import ConfigError
from selfsup.eval.features import cached_features
from selfsup.eval.loading import LoadedBackbone
from selfsup.knn import knn_scores


def labelled_features(
    loaded: LoadedBackbone,
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


def run_knn(
    loaded: LoadedBackbone,
    data: str,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 256,
    num_workers: int | None = None,
    root: str | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    train_f, train_y, test_f, test_y, classes = labelled_features(
        loaded, data, "kNN evaluation", batch_size, num_workers, root, use_cache, device
    )
    train, test = train_f, test_f
    num_classes = max(len(classes), int(train_y.max()) + 1, int(test_y.max()) + 1)
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
