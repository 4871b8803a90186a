"""``selfsup segment``: linear segmentation heads on a frozen backbone's dense features.

The head is DINOv2's linear segmentation head: BatchNorm and a 1x1 convolution on the
feature grid (:mod:`selfsup.eval.dense_features`), its logits upsampled bilinearly to
each mask's own size, trained with cross-entropy (optionally plus MONAI's Dice loss on
the foreground classes). A grid of learning rates trains in one pass over the cached
features (AdamW, cosine schedule); the head with the best mean foreground Dice on a
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
from selfsup.eval.segmentation_metrics import dice_scores, image_figures, summarise
from selfsup.eval.splits import group_split

LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
WEIGHT_DECAY = 1e-4


class LinearSegmentationHead(nn.Module):
    """BatchNorm + 1x1 convolution on ``(B, D, h, w)`` features -> ``(B, K, h, w)`` logits."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.classify = nn.Conv2d(dim, n_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classify(self.norm(features))


def upsampled(logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Each image's ``(K, h, w)`` logits bilinearly upsampled to its mask's ``(H, W)``."""
    if len(set(sizes)) == 1:
        up = nn.functional.interpolate(logits, sizes[0], mode="bilinear", align_corners=False)
        return list(up)
    return [nn.functional.interpolate(lg[None], s, mode="bilinear", align_corners=False)[0]
            for lg, s in zip(logits, sizes, strict=True)]  # fmt: skip


class HeadGrid:
    """One head per learning rate, trained together on the same batches."""

    def __init__(self, dim: int, n_classes: int, learning_rates: Sequence[float], steps: int,
                 dice_loss: bool, seed: int) -> None:  # fmt: skip
        torch.manual_seed(seed)
        self.heads = nn.ModuleList(LinearSegmentationHead(dim, n_classes) for _ in learning_rates)
        self.optimizers = [torch.optim.AdamW(h.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
                           for h, lr in zip(self.heads, learning_rates)]  # fmt: skip
        self.schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, max(steps, 1))
                          for o in self.optimizers]  # fmt: skip
        self.dice = None
        if dice_loss:
            from monai.losses import DiceLoss

            self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True)

    def loss(
        self, head: nn.Module, features: torch.Tensor, masks: list[torch.Tensor]
    ) -> torch.Tensor:
        logits = head(features)
        sizes = [tuple(m.shape) for m in masks]
        if len(set(sizes)) == 1:  # one batch, as an npz's masks are
            batches = [(upsampled(logits, sizes[:1] * len(masks)), torch.stack(masks))]
        else:
            batches = [([lg], m[None]) for lg, m in zip(upsampled(logits, sizes), masks)]
        total = torch.zeros(())
        for lg, m in batches:
            lg, m = torch.stack(lg), m.long()
            part = nn.functional.cross_entropy(lg, m)
            if self.dice is not None:
                part = part + self.dice(lg, m[:, None])
            total = total + part * len(m)
        return total / len(masks)

    def step(self, features: torch.Tensor, masks: list[torch.Tensor]) -> None:
        for head, opt, sched in zip(self.heads, self.optimizers, self.schedules, strict=True):
            head.train()
            opt.zero_grad(set_to_none=True)
            self.loss(head, features, masks).backward()
            opt.step()
            sched.step()


@torch.no_grad()
def predict_maps(head: nn.Module, features: torch.Tensor, sizes: list[tuple[int, int]],
                 batch: int = 32) -> list[torch.Tensor]:  # fmt: skip
    """Each image's predicted label map at its mask's size."""
    head.eval()
    out: list[torch.Tensor] = []
    for s in range(0, len(features), batch):
        logits = upsampled(head(features[s : s + batch]), sizes[s : s + batch])
        out += [lg.argmax(0).to(torch.uint8) for lg in logits]
    return out


def _mean_foreground_dice(pred: list[torch.Tensor], masks: list[torch.Tensor], k: int) -> float:
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
) -> tuple[nn.Module, int, list[float]]:
    """The grid trained on ``fit_idx`` -> (best head on ``val_idx``, its index, every
    head's validation mean foreground Dice)."""
    steps_per_epoch = math.ceil(len(fit_idx) / batch_size)
    grid = HeadGrid(features.shape[1], n_classes, learning_rates, epochs * steps_per_epoch,
                    dice_loss, seed)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = fit_idx[torch.randperm(len(fit_idx), generator=g).numpy()]
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            if len(idx) < 2 and len(order) > 1:
                continue  # BatchNorm needs two images (or more than one feature pixel)
            grid.step(features[idx], [masks[i] for i in idx])
    val_masks = [masks[i] for i in val_idx]
    sizes = [tuple(m.shape) for m in val_masks]
    scores = [_mean_foreground_dice(predict_maps(h, features[val_idx], sizes), val_masks, n_classes)
              for h in grid.heads]  # fmt: skip
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return grid.heads[best], best, scores


def test_figures(
    head: nn.Module,
    features: torch.Tensor,
    masks: list[torch.Tensor],
    classes: list[str],
    spacing: list[Any],
) -> tuple[dict[str, Any], list[torch.Tensor], list[list[dict[str, Any]]]]:
    """The test summary, the predicted maps and every image's figures."""
    pred = predict_maps(head, features, [tuple(m.shape) for m in masks])
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
    fit_idx, val_idx = group_split(presence, train_groups, val_fraction, seed)
    sizes = {"n_train": len(fit_idx), "n_val": len(val_idx), "n_test": len(test_masks)}
    if train_groups is not None:
        sizes["n_groups"] = {"train": len(set(train_groups[fit_idx])),
                             "val": len(set(train_groups[val_idx]))}  # fmt: skip

    def fit(idx: np.ndarray, s: int) -> tuple[dict[str, Any], list[torch.Tensor], list]:
        head, best, scores = train_heads(train_f, train_masks, idx, val_idx, k, epochs,
                                         batch_size, learning_rates, dice_loss, s)  # fmt: skip
        summary, pred, per_image = test_figures(head, test_f, test_masks, classes, test_spacing)
        headline = {"metric": "mean_foreground_dice", "value": summary["mean_foreground_dice"]}
        return ({"headline": headline, **summary, "lr": learning_rates[best],
                 "val_mean_foreground_dice": scores[best],
                 "grid_val_mean_foreground_dice": [round(v, 4) for v in scores]},
                pred, per_image)  # fmt: skip

    result: dict[str, Any] = {"task": "segment", "epochs": epochs, "dice_loss": dice_loss}
    if label_fractions is None:
        figures, pred, per_image = fit(fit_idx, seed)
        result.update(figures, per_image=per_image)
    else:
        fit_groups = train_groups[fit_idx] if train_groups is not None else None
        kept: dict[str, Any] = {}

        def one(sub: np.ndarray, s: int) -> dict[str, Any]:
            figures, pred, _ = fit(fit_idx[sub], s)
            kept["pred"] = pred  # the last run: the largest fraction's last seed
            per_class = {c: v["dice"]["mean"] for c, v in figures["per_class"].items()}
            return {"headline": figures["headline"], "lr": figures["lr"], "dice": per_class}

        result.update(label_curve(presence[fit_idx], fit_groups, label_fractions, label_seeds,
                                  seed, one))  # fmt: skip
        pred = kept["pred"]
    result.update(sizes, classes=list(classes))
    return result, pred


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
