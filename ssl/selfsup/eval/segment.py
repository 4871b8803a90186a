"""``selfsup segment``: linear segmentation heads on a frozen backbone's dense features.

The head is DINOv2's linear segmentation head: BatchNorm and a 1x1 convolution on the
feature grid (:mod:`selfsup.eval.dense_features`), its logits upsampled bilinearly to
each mask's own size, trained with cross-entropy (optionally plus MONAI's Dice loss on
the foreground classes). A grid of learning rates trains in one pass over the cached
features (SGD with momentum, cosine schedule); the head with the best mean foreground Dice on a
validation split carved from the training images by patient is reported on the test
split with the figures of :mod:`selfsup.eval.segmentation_metrics`, always at the
mask's resolution. No augmentation: a flip would swap left and right structures.

With label fractions, the heads train on nested subsets of the remaining training
images (stratified by which classes each mask holds, by patient); the validation split
stays the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selfsup.eval.label_curve import label_curve
from selfsup.eval.linear_grid import GridSGD
from selfsup.eval.segmentation_metrics import dice_scores, image_figures, summarise
from selfsup.eval.splits import group_split

LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
WEIGHT_DECAY = 1e-4


class SegmentationHeads(nn.Module):
    """``H`` linear segmentation heads, each DINOv2's BatchNorm + 1x1 convolution, on the
    same features: ``(B, D, h, w)`` -> logits ``(H, B, K, h, w)``.

    The heads see the same input, so their BatchNorm statistics are the same: one
    normalisation without affine parameters, then each head's affine (``scale``,
    ``shift``) and convolution (``weight``, ``bias``), folded into one matrix per head so
    the whole grid is one product (five separate heads took five times as long)."""

    def __init__(self, n_heads: int, dim: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim, affine=False)
        bound = 1 / math.sqrt(dim)  # torch's default for a 1x1 convolution
        self.scale = nn.Parameter(torch.ones(n_heads, dim))
        self.shift = nn.Parameter(torch.zeros(n_heads, dim))
        self.weight = nn.Parameter(torch.empty(n_heads, n_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_heads, n_classes).uniform_(-bound, bound))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.norm(features)
        weight = self.weight * self.scale[:, None, :]
        bias = self.bias + torch.einsum("hkd,hd->hk", self.weight, self.shift)
        return torch.einsum("bdyx,hkd->hbkyx", z, weight) + bias[:, None, :, None, None]


def upsampled(logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Each image's ``(..., K, h, w)`` logits (images along the first dimension) bilinearly
    upsampled to its mask's ``(H, W)``."""

    def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # (N, ..., h, w)
        flat = x.reshape(x.shape[0], -1, *x.shape[-2:])
        up = nn.functional.interpolate(flat, size, mode="bilinear", align_corners=False)
        return up.view(*x.shape[:-2], *size)

    if len(set(sizes)) == 1:
        return list(resize(logits, sizes[0]))
    return [resize(lg[None], s)[0] for lg, s in zip(logits, sizes, strict=True)]


class SegmentationLoss:
    """Sum over heads of each head's cross-entropy (optionally plus MONAI's Dice loss on
    the foreground classes), mean over the images, at each mask's own size."""

    def __init__(self, dice_loss: bool) -> None:
        self.dice = None
        if dice_loss:
            from monai.losses import DiceLoss

            self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True)

    def __call__(self, logits: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        heads, n = logits.shape[:2]
        sizes = [tuple(m.shape) for m in masks]
        per_image = logits.transpose(0, 1)  # (B, H, K, h, w)
        if len(set(sizes)) == 1:  # one batch, as an npz's masks are
            up = torch.stack(upsampled(per_image, sizes))
            batches = [(up.flatten(0, 1), torch.stack(masks).repeat_interleave(heads, 0))]
        else:
            batches = [(lg, m[None].expand(heads, *m.shape))
                       for lg, m in zip(upsampled(per_image, sizes), masks)]  # fmt: skip
        total = logits.new_zeros(())
        for lg, m in batches:
            m = m.long()
            part = nn.functional.cross_entropy(lg, m)
            if self.dice is not None:
                part = part + self.dice(lg, m[:, None])
            total = total + part * len(m)
        return total / n


@torch.no_grad()
def predict_maps(heads: nn.Module, features: torch.Tensor, sizes: list[tuple[int, int]],
                 batch: int = 32) -> list[list[torch.Tensor]]:  # fmt: skip
    """Every head's predicted label map of each image, at its mask's size:
    ``maps[head][image]``."""
    heads.eval()
    out: list[list[torch.Tensor]] = []
    for s in range(0, len(features), batch):
        logits = heads(features[s : s + batch]).transpose(0, 1)  # (B, H, K, h, w)
        out += [
            list(lg.argmax(1).to(torch.uint8)) for lg in upsampled(logits, sizes[s : s + batch])
        ]
    return [list(per_head) for per_head in zip(*out)] if out else []


def mean_foreground_dice(pred: list[torch.Tensor], masks: list[torch.Tensor], k: int) -> float:
    """Mean over classes of the per-class mean Dice over images holding the class (as
    the test headline), the figure heads are picked by."""
    per_image = torch.stack([dice_scores(p[None], m[None], k)[0] for p, m in zip(pred, masks)])
    per_class = torch.nanmean(per_image, 0)
    valid = per_class[~per_class.isnan()]
    return float(valid.mean()) if len(valid) else 0.0


def train_heads(
    features: torch.Tensor,
    masks: list[torch.Tensor],
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    n_classes: int,
    epochs: int,
    batch_size: int,
    learning_rates: Sequence[float],
    dice_loss: bool,
    seed: int,
) -> tuple[SegmentationHeads, int, list[float]]:
    """The grid trained on ``fit_idx`` -> (the heads, the index of the best on ``val_idx``,
    every head's validation mean foreground Dice). SGD with momentum and a cosine schedule,
    one learning rate per head (:class:`~selfsup.eval.linear_grid.GridSGD`)."""
    torch.manual_seed(seed)
    heads = SegmentationHeads(len(learning_rates), features.shape[1], n_classes)
    grid = [{"lr": lr, "weight_decay": WEIGHT_DECAY} for lr in learning_rates]
    steps = epochs * math.ceil(len(fit_idx) / batch_size)
    sgd = GridSGD(heads, grid, steps, SegmentationLoss(dice_loss))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        heads.train()
        order = fit_idx[torch.randperm(len(fit_idx), generator=g).numpy()]
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            if len(idx) < 2 and len(order) > 1:
                continue  # BatchNorm statistics of one image: left out
            sgd.step(features[idx], [masks[i] for i in idx])
    val_masks = [masks[i] for i in val_idx]
    maps = predict_maps(heads, features[val_idx], [tuple(m.shape) for m in val_masks])
    scores = [mean_foreground_dice(pred, val_masks, n_classes) for pred in maps]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return heads, best, scores


def test_figures(
    heads: SegmentationHeads,
    best: int,
    features: torch.Tensor,
    masks: list[torch.Tensor],
    classes: list[str],
    spacing: list[Any],
) -> tuple[dict[str, Any], list[torch.Tensor], list[list[dict[str, Any]]]]:
    """Head ``best``'s test summary, its predicted maps and every image's figures."""
    pred = predict_maps(heads, features, [tuple(m.shape) for m in masks])[best]
    per_image = [image_figures(p, m, len(classes), s)
                 for p, m, s in zip(pred, masks, spacing, strict=True)]  # fmt: skip
    known = all(s is not None for s in spacing)
    return summarise(per_image, classes, known), pred, per_image


def run_segment(
    train_f: torch.Tensor,
    train_masks: list[torch.Tensor],
    test_f: torch.Tensor,
    test_masks: list[torch.Tensor],
    classes: list[str],
    train_groups: np.ndarray | None,
    presence: np.ndarray,
    test_spacing: list[Any],
    val_fraction: float = 0.2,
    epochs: int = 40,
    batch_size: int = 16,
    learning_rates: Sequence[float] = LEARNING_RATES,
    dice_loss: bool = False,
    seed: int = 0,
    label_fractions: Sequence[float] | None = None,
    label_seeds: int = 1,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """The segmentation evaluation on extracted features -> (result, test predictions)."""
    k = len(classes)

    def fit(idx: np.ndarray, val_idx: np.ndarray, s: int) -> tuple[dict[str, Any], list]:
        heads, best, scores = train_heads(train_f, train_masks, idx, val_idx, k, epochs,
                                          batch_size, learning_rates, dice_loss, s)  # fmt: skip
        summary, pred, per_image = test_figures(heads, best, test_f, test_masks, classes,
                                                test_spacing)  # fmt: skip
        headline = {"metric": "mean_foreground_dice", "value": summary["mean_foreground_dice"]}
        return ({"headline": headline, **summary, "lr": learning_rates[best],
                 "val_mean_foreground_dice": scores[best],
                 "grid_val_mean_foreground_dice": [round(v, 4) for v in scores],
                 "per_image": per_image}, pred)  # fmt: skip

    result, pred = split_and_fit(fit, presence, train_groups, len(test_masks), val_fraction,
                                 seed, label_fractions, label_seeds)  # fmt: skip
    return {"task": "segment", "epochs": epochs, "dice_loss": dice_loss, **result,
            "classes": list(classes)}, pred  # fmt: skip


def split_and_fit(
    fit: Any,
    presence: np.ndarray,
    groups: np.ndarray | None,
    n_test: int,
    val_fraction: float,
    seed: int,
    label_fractions: Sequence[float] | None,
    label_seeds: int,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """A validation split carved from the training images by patient (stratified by the
    classes each mask holds), then ``fit(train indices, val indices, seed) -> (figures,
    test predictions)`` once, or on nested label fractions (a curve of the headline)."""
    fit_idx, val_idx = group_split(presence, groups, val_fraction, seed)
    sizes: dict[str, Any] = {"n_train": len(fit_idx), "n_val": len(val_idx), "n_test": n_test}
    if groups is not None:
        sizes["n_groups"] = {"train": len(set(groups[fit_idx])), "val": len(set(groups[val_idx]))}
    if label_fractions is None:
        figures, pred = fit(fit_idx, val_idx, seed)
        return {**figures, **sizes}, pred
    fit_groups = groups[fit_idx] if groups is not None else None
    kept: dict[str, Any] = {}

    def one(sub: np.ndarray, s: int) -> dict[str, Any]:
        figures, kept["pred"] = fit(fit_idx[sub], val_idx, s)  # kept: the last run's maps
        per_class = {c: v["dice"]["mean"] for c, v in figures["per_class"].items()}
        return {"headline": figures["headline"], "lr": figures["lr"], "dice": per_class}

    curve = label_curve(presence[fit_idx], fit_groups, label_fractions, label_seeds, seed, one)
    return {**curve, **sizes}, kept["pred"]


def save_overlays(images: list[torch.Tensor], masks: list[torch.Tensor], pred: list[torch.Tensor],
                  classes: list[str], path: Path, n: int) -> None:  # fmt: skip
    """``n`` test images in rows: image | reference | prediction (classes in colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = min(n, len(images))
    if n == 0:
        return
    colours = plt.get_cmap("tab10").colors
    cmap = ListedColormap(
        [(0, 0, 0, 0), *[(*colours[i % 10], 0.45) for i in range(len(classes) - 1)]]
    )
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for row in range(n):
        image = images[row].float()
        image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-6)
        shown = image.permute(1, 2, 0).squeeze(-1).numpy()
        for col, (title, mask) in enumerate((("image", None), ("reference", masks[row]),
                                             ("prediction", pred[row]))):  # fmt: skip
            ax = axes[row, col]
            ax.imshow(shown, cmap="gray")
            if mask is not None:
                ax.imshow(mask.numpy(), cmap=cmap, vmin=0, vmax=len(classes) - 1,
                          interpolation="nearest")  # fmt: skip
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % 10]) for i in range(len(classes) - 1)]
    fig.legend(handles, classes[1:], loc="lower center", ncol=len(classes) - 1, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_predictions(pred: list[torch.Tensor], classes: list[str], files: list[str] | None,
                     path: Path) -> None:  # fmt: skip
    """The predicted test maps as an ``.npz``: ``m_pred`` ``(N, H, W)`` when the maps share
    a size (else ``m_pred_<i>`` each), ``classes``, and ``files`` where the images have them."""
    arrays: dict[str, Any] = {"classes": np.asarray(classes, dtype=str)}
    if len({tuple(p.shape) for p in pred}) == 1:
        arrays["m_pred"] = torch.stack(pred).numpy()
    else:
        arrays.update({f"m_pred_{i}": p.numpy() for i, p in enumerate(pred)})
    if files:
        arrays["files"] = np.asarray(files, dtype=str)
    np.savez_compressed(path, **arrays)
