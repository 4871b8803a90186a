"""Segmentation figures as medical papers report them: per class and per image, at the
mask's own resolution, in millimetres where the pixel spacing is known.

Per image and foreground class (:func:`image_figures`):

- Dice ``2TP / (2TP + FP + FN)`` and IoU (Jaccard) ``TP / (TP + FP + FN)``;
- sensitivity ``TP / (TP + FN)`` and specificity ``TN / (TN + FP)``;
- volume similarity ``1 - |FP - FN| / (2TP + FP + FN)`` (Taha & Hanbury, 2015) and the
  signed area difference ``area(prediction) - area(reference)`` (positive:
  over-segmentation; negative: under-segmentation), in mm² (px² without spacing);
- HD95, the 95th percentile of the symmetric surface distances, and ASD, the average
  symmetric surface distance (every boundary pixel of both masks, its distance to the
  other mask's boundary, averaged), in mm (px without spacing).

The counts come from MONAI's ``get_confusion_matrix``; the distances from MONAI's
``compute_hausdorff_distance`` and ``compute_average_surface_distance`` with the image's
spacing (boundaries: the mask minus its erosion, distances by Euclidean distance
transform). The ratios above are closed forms of the four counts.

The empty cases are decided here, never left to a NaN-mean (:data:`EMPTY_RULES`): a
class absent from both the reference and the prediction is a true negative; absent from
the reference only, a false positive; absent from the prediction only, a missed
structure. Summaries (:func:`summarise`) give mean, median and interquartile range over
the images whose reference holds the class, the empty cases in their own counts, and
Dice by structure size (terciles of the reference area), so small structures are seen.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: How images without the class in the reference and/or the prediction are scored,
#: written into every ``metrics.json``.
EMPTY_RULES = {
    "reference_and_prediction_empty": (
        "true negative: counted in empty.both, left out of every mean, median and IQR "
        "(Dice would be 0/0)"
    ),
    "reference_empty_prediction_not": (
        "false positive: counted in empty.false_positive with the area predicted, left out of "
        "the means (no reference boundary to measure a distance to)"
    ),
    "prediction_empty_reference_not": (
        "missed structure: Dice, IoU, sensitivity and volume similarity 0, HD95 and ASD the "
        "image's diagonal (the largest distance possible); counted in empty.missed and kept "
        "in the means"
    ),
}

FIGURES = ("dice", "iou", "hd95", "asd", "volume_similarity", "sensitivity", "specificity",
           "area_difference")  # fmt: skip


def _one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(H, W)`` class indices -> ``(1, K, H, W)`` 0/1 float, as MONAI's metrics take."""
    hot = torch.nn.functional.one_hot(labels.long(), n_classes).permute(2, 0, 1)
    return hot[None].float()


def image_figures(
    prediction: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray,
    n_classes: int,
    spacing: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """One dict per foreground class (1..K-1) of one image: the figures of the module doc,
    ``case`` (``present``, ``missed``, ``false_positive`` or ``both_empty``) and the
    reference and predicted areas. ``spacing``: ``(row, column)`` size of a pixel in mm."""
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        get_confusion_matrix,
    )

    pred, ref = torch.as_tensor(np.asarray(prediction)), torch.as_tensor(np.asarray(reference))
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} "
                         "must be (H, W) masks of one size")  # fmt: skip
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    pixel_area = sy * sx
    diagonal = math.hypot(pred.shape[0] * sy, pred.shape[1] * sx)
    p_hot, r_hot = _one_hot(pred, n_classes), _one_hot(ref, n_classes)
    tp, fp, tn, fn = get_confusion_matrix(p_hot, r_hot, include_background=True)[0].T.double()
    out = []
    for c in range(1, n_classes):
        ref_n, pred_n = int(tp[c] + fn[c]), int(tp[c] + fp[c])
        row: dict[str, Any] = {"reference_area": ref_n * pixel_area,
                               "predicted_area": pred_n * pixel_area,
                               "area_difference": (pred_n - ref_n) * pixel_area}  # fmt: skip
        if ref_n == 0:
            row["case"] = "both_empty" if pred_n == 0 else "false_positive"
            row["specificity"] = float(tn[c] / (tn[c] + fp[c]))
            out.append(row)
            continue
        union = float(tp[c] + fp[c] + fn[c])
        row.update(
            case="present" if pred_n else "missed",
            dice=float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])),
            iou=float(tp[c] / union),
            sensitivity=float(tp[c] / (tp[c] + fn[c])),
            specificity=float(tn[c] / (tn[c] + fp[c])) if tn[c] + fp[c] else 1.0,
            volume_similarity=float(1 - abs(fp[c] - fn[c]) / (2 * tp[c] + fp[c] + fn[c])),
        )
        if pred_n == 0:
            row.update(hd95=diagonal, asd=diagonal)
        else:
            p1, r1 = p_hot[:, c : c + 1], r_hot[:, c : c + 1]
            with warnings.catch_warnings():  # both masks are non-empty here
                warnings.simplefilter("ignore")
                hd = compute_hausdorff_distance(p1, r1, include_background=True, percentile=95,
                                                spacing=[sy, sx])  # fmt: skip
                asd = compute_average_surface_distance(p1, r1, include_background=True,
                                                       symmetric=True, spacing=[sy, sx])  # fmt: skip
            row.update(hd95=float(hd[0, 0]), asd=float(asd[0, 0]))
        out.append(row)
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "q1": None, "q3": None}
    a = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(a, [25, 50, 75])
    return {"n": len(a), "mean": float(a.mean()), "median": float(median), "q1": float(q1),
            "q3": float(q3)}  # fmt: skip


def _by_size(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dice by terciles of the reference area (small, medium, large) of the images that
    hold the class: the area range of each third and its mean Dice."""
    rows = sorted(rows, key=lambda r: r["reference_area"])
    out = []
    for name, part in zip(("small", "medium", "large"), np.array_split(np.arange(len(rows)), 3)):
        if not len(part):
            continue
        chosen = [rows[i] for i in part]
        out.append({"size": name, "n": len(chosen),
                    "reference_area": [chosen[0]["reference_area"], chosen[-1]["reference_area"]],
                    "dice": _stats([r["dice"] for r in chosen])["mean"]})  # fmt: skip
    return out


def summarise(
    per_image: list[list[dict[str, Any]]], classes: Sequence[str], spacing_known: bool
) -> dict[str, Any]:
    """The figures of many images (``per_image[i][c-1]`` from :func:`image_figures`):
    per foreground class, each figure's mean, median and quartiles over the images whose
    reference holds the class, the empty cases counted, Dice by structure size; and the
    headline ``mean_foreground_dice`` (the mean over classes of each class's mean Dice)."""
    per_class: dict[str, Any] = {}
    for c, name in enumerate(classes[1:]):
        rows = [image[c] for image in per_image]
        scored = [r for r in rows if r["case"] in ("present", "missed")]
        false_pos = [r for r in rows if r["case"] == "false_positive"]
        per_class[name] = {
            **{f: _stats([r[f] for r in scored]) for f in FIGURES},
            "empty": {
                "both": sum(r["case"] == "both_empty" for r in rows),
                "false_positive": len(false_pos),
                "false_positive_area": _stats([r["predicted_area"] for r in false_pos])["mean"],
                "missed": sum(r["case"] == "missed" for r in rows),
            },
            "by_size": _by_size(scored),
        }
    dices = [v["dice"]["mean"] for v in per_class.values() if v["dice"]["mean"] is not None]
    return {
        "mean_foreground_dice": float(np.mean(dices)) if dices else None,
        "per_class": per_class,
        "units": {
            "distance": "mm" if spacing_known else "px",
            "area": "mm2" if spacing_known else "px2",
        },
        "empty_rules": EMPTY_RULES,
    }


def dice_scores(prediction: torch.Tensor, reference: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per image and foreground class Dice of ``(N, H, W)`` label maps, ``(N, K-1)``, NaN
    where neither holds the class: the quick figure heads are picked by."""
    p = torch.nn.functional.one_hot(prediction.long(), n_classes)[..., 1:].flatten(1, 2)
    r = torch.nn.functional.one_hot(reference.long(), n_classes)[..., 1:].flatten(1, 2)
    inter, total = (p * r).sum(1).double(), (p.sum(1) + r.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.nan)
