"""Classification metrics for the evaluators' JSON line and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def classification_metrics(
    scores: torch.Tensor, labels: torch.Tensor, class_names: list[str] | None = None
) -> dict[str, Any]:
    """``scores`` ``(N, C)`` and int ``labels`` ``(N,)`` -> top1, top5 (C > 5), balanced
    accuracy, per-class accuracy, AUROC (two classes) and the confusion matrix."""
    n, c = scores.shape
    labels = labels.long()
    pred = scores.argmax(1)
    out: dict[str, Any] = {"top1": (pred == labels).float().mean().item()}
    if c > 5:
        top5 = scores.topk(5, dim=1).indices
        out["top5"] = (top5 == labels[:, None]).any(1).float().mean().item()
    confusion = torch.zeros(c, c, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones(n, dtype=torch.long), accumulate=True)
    support = confusion.sum(1)
    per_class = confusion.diag().float() / support.clamp(min=1)
    present = support > 0
    out["balanced_accuracy"] = per_class[present].mean().item()
    names = class_names if class_names and len(class_names) == c else [str(i) for i in range(c)]
    out["per_class_accuracy"] = {
        names[i]: round(per_class[i].item(), 6) for i in range(c) if present[i]
    }
    if c == 2:
        out["auroc"] = auroc(scores.softmax(1)[:, 1], labels)
    out["confusion_matrix"] = confusion.tolist()
    return out


def label_warnings(
    train_y: torch.Tensor, test_y: torch.Tensor, class_names: list[str] | None = None
) -> list[str]:
    """What the labels make of a classifier's figures, one line each: a training split
    of one class (every prediction is that class, so top1 says nothing about the
    features) and test classes no training image has (never predicted right)."""

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


def auroc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` for the positive class 1 (Mann-Whitney U,
    ties counted half)."""
    pos, neg = score[labels == 1], score[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().sum()
    ties = (pos[:, None] == neg[None, :]).float().sum()
    return ((greater + 0.5 * ties) / (len(pos) * len(neg))).item()


def save_confusion_matrix(confusion: list[list[int]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = torch.tensor(confusion, dtype=torch.float)
    rates = m / m.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
