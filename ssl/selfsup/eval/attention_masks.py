"""DINO's self-supervised segmentation maps, measured: the Jaccard index of a ViT's
thresholded last-block attention against the reference foreground (every class but the
background), the protocol of Caron et al. (2021), Sec. 5.1 / Table 7.

Each map (every head's CLS attention over the patches, and their mean) keeps the patches
holding ``threshold`` of its mass (:func:`selfsup.viz.attention.mass_mask`, DINO's 0.6);
the patch mask is spread over its pixels and resized (nearest) to the mask's own size.
The best head is chosen on the training images and reported on the test images, so the
choice never sees the figures it reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from selfsup.viz.attention import attention_maps, mass_mask


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks; 1 where both are empty."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


@torch.no_grad()
def attention_jaccards(
    backbone: Any, transform: Any, data: Any, threshold: float = 0.6, batch: int = 32
) -> tuple[torch.Tensor, bool]:
    """``(N, heads + 1)``: each image's Jaccard for every head's mask and (last column) the
    mask of the heads' mean map; and whether the maps are the CLS token's attention."""
    rows, from_cls = [], True
    for start in range(0, len(data), batch):
        idx = range(start, min(start + batch, len(data)))
        x = torch.stack([transform(data.read(i)) for i in idx])
        maps, from_cls = attention_maps(backbone, x)  # (B, heads, h, w)
        maps = torch.cat([maps, maps.mean(1, keepdim=True)], 1)
        kept = mass_mask(maps, threshold).float()
        for j, i in enumerate(idx):
            reference = torch.from_numpy(data.masks[i].astype(np.int64)) > 0
            size = tuple(reference.shape)
            predicted = F.interpolate(kept[j][None], size, mode="nearest")[0] > 0.5
            rows.append([jaccard(p, reference) for p in predicted])
    return torch.tensor(rows), from_cls


def attention_report(
    backbone: Any, transform: Any, train: Any, test: Any, threshold: float = 0.6
) -> dict[str, Any]:
    """The ``attention`` section of ``selfsup segment``'s JSON: mean and median Jaccard of
    the heads' mean map and of the best head (picked on ``train``), every head's test
    mean, over the test images."""
    train_j, _ = attention_jaccards(backbone, transform, train, threshold)
    test_j, from_cls = attention_jaccards(backbone, transform, test, threshold)
    n_heads = test_j.shape[1] - 1
    best = int(train_j[:, :n_heads].mean(0).argmax())

    def stats(column: torch.Tensor) -> dict[str, float]:
        return {"mean": float(column.mean()), "median": float(column.median())}

    return {
        "threshold": threshold,
        "foreground": "every class but the background",
        "maps": "CLS attention" if from_cls else "attention received by each patch (no CLS)",
        "mean_of_heads": stats(test_j[:, n_heads]),
        "best_head": {"head": best, "picked_on": "train", **stats(test_j[:, best])},
        "per_head_mean": [round(float(v), 4) for v in test_j[:, :n_heads].mean(0)],
    }
