"""``selfsup knn``: weighted kNN of a checkpoint's features, train split as memory bank, test split as queries."""

from __future__ import annotations

from typing import Any

import torch

from selfsup.checkpoints import LoadedBackbone
from selfsup.eval.features import groups_of, labelled_features, notes_of
from selfsup.eval.metrics import (
    classification_metrics,
    is_multilabel,
    label_warnings,
    multilabel_metrics,
    prevalence,
)
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
    reading: Any = None,
    allow_group_overlap: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The kNN figures and class names: single-label sets get
    :func:`classification_metrics` of the first k's vote shares (and ``top1_k<K>`` for the
    others); multi-label sets get :func:`multilabel_metrics` of each finding's vote share
    (and ``macro_auroc_k<K>``).

    Besides the figures: ``warnings`` (one line each, also on stderr: unreadable images
    left out, a one-class training split, a k above the number of training images),
    ``skipped_images`` and ``n_skipped`` (see :class:`EvalNotes`).
    """
    train_f, train_y, test_f, test_y, classes = labelled_features(
        loaded, data, "kNN evaluation", batch_size, num_workers, root, use_cache, device,
        reading=reading, allow_group_overlap=allow_group_overlap,
    )  # fmt: skip
    notes = notes_of(classes)
    for message in label_warnings(train_y, test_y, classes):
        notes.warn(message)
    too_many = [k for k in ks if k > len(train_f)]
    if too_many:
        notes.warn(
            f"k = {', '.join(map(str, too_many))} but there are only {len(train_f)} training "
            f"images: each query votes over all {len(train_f)} (give --k {len(train_f)} or less)."
        )
    if is_multilabel(train_y):
        n_out = train_y.shape[1]
        scores = knn_scores(train_f, train_y, test_f, n_out, ks, temperature)
        figures = multilabel_metrics(scores[ks[0]], test_y, classes)
        others = {f"macro_auroc_k{k}": multilabel_metrics(scores[k], test_y, classes)["macro_auroc"]
                  for k in ks[1:]}  # fmt: skip
        figures["prevalence"]["train"] = prevalence(train_y, list(figures["prevalence"]["test"]))
    else:
        n_out = max(len(classes), int(train_y.max()) + 1, int(test_y.max()) + 1)
        scores = knn_scores(train_f, train_y, test_f, n_out, ks, temperature)
        figures = classification_metrics(scores[ks[0]], test_y, classes)
        others = {f"top1_k{k}": (scores[k].argmax(1) == test_y).float().mean().item()
                  for k in ks[1:]}  # fmt: skip
    result: dict[str, Any] = {"task": "knn", **figures, **others}
    train_g, test_g = groups_of(classes)
    if train_g is not None:
        result["n_groups"] = {"train": len(set(train_g)),
                              "test": len(set(test_g)) if test_g is not None else None}  # fmt: skip
    result.update(
        k=ks[0],
        temperature=temperature,
        n_train=len(train_f),
        n_test=len(test_f),
        classes=list(classes),
        backbone=loaded.meta["loaded"],
        pool=loaded.meta["pool"],
        checkpoint=loaded.path,
        **notes.fields(),
    )
    if loaded.meta.get("init_from"):  # where the checkpoint's weights began
        result["init_from"] = loaded.meta["init_from"]
    return result, classes
