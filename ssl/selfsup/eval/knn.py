"""``selfsup knn``: weighted kNN of a checkpoint's features, train split as memory bank, test split as queries."""

from __future__ import annotations

from typing import Any

import torch

from selfsup.eval.features import labelled_features
from selfsup.checkpoints import LoadedBackbone
from selfsup.eval.metrics import classification_metrics
from selfsup.knn import knn_scores


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
) -> tuple[dict[str, Any], list[str]]:
    """The kNN figures (with the metrics of :func:`classification_metrics`) and class names."""
    train_f, train_y, test_f, test_y, classes = labelled_features(
        loaded, data, "kNN evaluation", batch_size, num_workers, root, use_cache, device
    )
    num_classes = max(len(classes), int(train_y.max()) + 1, int(test_y.max()) + 1)
    scores = knn_scores(train_f, train_y, test_f, num_classes, ks, temperature)
    # The headline k's weighted votes serve as class scores (top5, AUROC, ...).
    result: dict[str, Any] = {
        "task": "knn",
        **classification_metrics(scores[ks[0]], test_y, classes),
    }
    result.update(
        {f"top1_k{k}": (scores[k].argmax(1) == test_y).float().mean().item() for k in ks[1:]}
    )
    result.update(
        k=ks[0],
        temperature=temperature,
        n_train=len(train_f),
        n_test=len(test_f),
        backbone=loaded.meta["loaded"],
        pool=loaded.meta["pool"],
        checkpoint=loaded.path,
    )
    return result, classes
