"""Classification figures for the evaluators' JSON line and metrics.json, single- and
multi-label, computed by torchmetrics on the whole split at once (the evaluators gather a
split that DDP spread over processes first, so every sample counts once).

Every evaluator passes probabilities: softmax outputs (probe, fine-tuning) or the kNN's
vote shares, one row per image. The JSON names its ``headline``: ``top1`` for single-label
sets, ``macro_auroc`` for multi-label ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_recall,
)

from selfsup.eval.multilabel import multilabel_report


def class_names_for(class_names: list[str] | None, c: int) -> list[str]:
    """The ``c`` names a report shows: the data's class names where they fit, else ``"0".."c-1"``."""
    return (
        [str(n) for n in class_names]
        if class_names and len(class_names) == c
        else [str(i) for i in range(c)]
    )


def classification_metrics(
    probs: torch.Tensor, labels: torch.Tensor, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Single-label figures of ``probs`` ``(N, C)`` for int ``labels`` ``(N,)``.

    top1, top5 (C > 5), balanced accuracy (mean recall over the classes present, as
    scikit-learn's ``balanced_accuracy_score``), per-class accuracy (recall), the confusion
    matrix (rows true, columns predicted), and one-vs-rest AUROC and average precision per
    class: ``auroc`` is class 1's for two classes; with more, ``per_class_auroc`` and
    ``macro_auroc`` (over the classes with test images, see :func:`multilabel_report`)."""
    probs, labels = probs.detach().cpu().double(), labels.detach().cpu().long()
    if probs.shape[1] < 2:  # one class: torchmetrics counts two or more; the second is empty
        probs = torch.cat([probs, torch.zeros_like(probs)], 1)
        class_names = [*(class_names or ["0"])[:1], "(no class)"]
    c = probs.shape[1]
    out: dict[str, Any] = {
        "top1": float(multiclass_accuracy(probs, labels, c, average="micro", top_k=1))
    }
    if c > 5:
        out["top5"] = float(multiclass_accuracy(probs, labels, c, average="micro", top_k=5))
    recall = multiclass_recall(probs, labels, c, average="none")
    present = torch.bincount(labels, minlength=c) > 0
    out["balanced_accuracy"] = float(recall[present].mean())
    names = class_names_for(class_names, c)
    out["per_class_accuracy"] = {
        names[i]: round(float(recall[i]), 6) for i in range(c) if present[i]
    }
    one_vs_rest = multilabel_report(probs, torch.nn.functional.one_hot(labels, c), names)
    if c == 2:
        out["auroc"] = one_vs_rest["auroc"][names[1]]
        out["average_precision"] = one_vs_rest["average_precision"][names[1]]
    else:
        out["per_class_auroc"] = one_vs_rest["auroc"]
        out["macro_auroc"] = one_vs_rest["macro_auroc"]
    out["confusion_matrix"] = multiclass_confusion_matrix(probs, labels, c).tolist()
    out["headline"] = {"metric": "top1", "value": out["top1"]}
    return out


def multilabel_metrics(
    probs: torch.Tensor, targets: torch.Tensor, names: list[str] | None = None
) -> dict[str, Any]:
    """Multi-label figures of per-finding probabilities ``(N, K)`` for 0/1 ``targets``
    ``(N, K)``: :func:`multilabel_report` (per-finding AUROC and average precision, macro
    and micro AUROC, mAP, the test split's prevalence per finding) with the headline."""
    report = multilabel_report(probs, targets, class_names_for(names, probs.shape[1]))
    report["prevalence"] = {"test": report.pop("prevalence")}
    return {**report, "headline": {"metric": "macro_auroc", "value": report["macro_auroc"]}}


def prevalence(targets: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Share of images with each finding."""
    share = targets.double().mean(0) if len(targets) else torch.zeros(len(names))
    return {name: round(float(s), 6) for name, s in zip(names, share, strict=True)}


def is_multilabel(labels: torch.Tensor) -> bool:
    return labels.ndim == 2


def label_warnings(
    train_y: torch.Tensor, test_y: torch.Tensor, class_names: list[str] | None = None
) -> list[str]:
    """What the labels make of a classifier's figures, one line each.

    Single-label: a training split of one class (every prediction is that class, so top1
    says nothing about the features) and test classes no training image has (never
    predicted right). Multi-label: findings no training image has (nothing to learn), and
    findings the test split holds on every image or on none (no AUROC: left out of the
    macro average)."""
    if is_multilabel(train_y):
        return _finding_warnings(train_y, test_y, class_names_for(class_names, train_y.shape[1]))

    def name(c: int) -> str:
        return str(class_names[c]) if class_names and 0 <= c < len(class_names) else str(c)

    seen = set(train_y.long().unique().tolist())
    out = []
    if len(seen) == 1:
        only = name(next(iter(seen)))
        share = (test_y.long() == next(iter(seen))).float().mean().item() if len(test_y) else 0.0
        out.append(
            f"the training split has one class ({only}): every prediction is {only}, so top1 "
            f"({share:.3g}) is the share of {only} in the test split and says nothing about "
            "the features; evaluate on two or more classes."
        )
    unseen = sorted(set(test_y.long().unique().tolist()) - seen)
    if unseen:
        n = int(sum((test_y.long() == c).sum().item() for c in unseen))
        out.append(
            f"{n} test image(s) belong to classes with no training images "
            f"({', '.join(name(c) for c in unseen)}): they can never be predicted right."
        )
    return out


def _finding_warnings(train_y: torch.Tensor, test_y: torch.Tensor, names: list[str]) -> list[str]:
    out = []
    absent = [names[i] for i in range(len(names)) if int(train_y[:, i].sum()) == 0]
    if absent:
        out.append(
            f"no training image has finding(s) {', '.join(absent)}: their scores carry no "
            "learned signal; add positive training images or drop those columns."
        )
    positives = test_y.long().sum(0)
    one_class = [names[i] for i in range(len(names)) if positives[i] in (0, len(test_y))]
    if one_class:
        out.append(
            f"the test split has finding(s) {', '.join(one_class)} on every image or on none: "
            "they have no AUROC and are left out of macro AUROC and mAP."
        )
    return out
