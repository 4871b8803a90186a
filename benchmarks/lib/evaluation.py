"""How the quality study scores features: weighted kNN (k = 20, T = 0.07, cosine; the
evaluator of ``selfsup knn``), its AUROC on two classes, and the cached-feature linear
probe, in bf16 autocast where the CPU runs bf16 natively."""

from __future__ import annotations

from collections.abc import Callable

import torch

from selfsup.precision import cpu_has_native_bf16

from .quality_data import normalised

K, T = 20, 0.07
NATIVE_BF16 = cpu_has_native_bf16()


@torch.no_grad()
def features(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mean, std,
             batch: int = 500) -> torch.Tensor:  # fmt: skip
    """Features of uint8 ``images`` normalised by ``mean``/``std`` (:func:`normalised`)."""
    out = []
    for x in normalised(images, mean, std, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=NATIVE_BF16):
            out.append(fn(x).float())
    return torch.cat(out)


def auroc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` for class 1 (Mann-Whitney U, ties count half)."""
    pos, neg = score[labels == 1], score[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return (greater / (len(pos) * len(neg))).item()


def evaluate(fn, data, mean, std, probe: bool = False, knn: bool = True) -> dict[str, float]:
    """Weighted kNN top-1 (and, on two named classes, its AUROC: the weighted vote share
    of class 1 as score); with ``probe`` the cached-feature linear probe's top-1 (and AUROC
    on two classes)."""
    from selfsup.knn import knn_scores, knn_top1

    train_f = features(fn, data["x_train"], mean, std)
    test_f = features(fn, data["x_test"], mean, std)
    classes = data.get("classes")
    result = {}
    if knn and classes is not None and len(classes) == 2:
        votes = knn_scores(train_f, data["y_train"], test_f, 2, (K,), T)[K]
        result["knn"] = (votes.argmax(1) == data["y_test"]).float().mean().item()
        result["knn_auroc"] = auroc(votes[:, 1] / votes.sum(1), data["y_test"])
    elif knn:
        result["knn"] = knn_top1(train_f, data["y_train"], test_f, data["y_test"], K, T)
    if probe:
        from selfsup.eval.probe import run_probe

        names = list(classes) if classes is not None else None
        fitted = run_probe(train_f, data["y_train"], test_f, data["y_test"], names)
        result["probe"] = fitted["top1"]
        if "auroc" in fitted:
            result["probe_auroc"] = fitted["auroc"]
    return result
