"""Segmentation figures against naive references: counts by loops, surface distances by
scipy's Euclidean distance transform with anisotropic sampling, every empty case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from selfsup.eval.segmentation_metrics import dice_scores, image_figures, summarise


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The mask minus its erosion (a cross), as the surface of a 2D mask is usually taken."""
    return mask & ~ndimage.binary_erosion(mask)


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Distance (mm) of every boundary pixel of a to the nearest boundary pixel of b."""
    to_b = ndimage.distance_transform_edt(~_boundary(b), sampling=spacing)
    return to_b[_boundary(a)]


def _naive(pred: np.ndarray, ref: np.ndarray, c: int, spacing: tuple[float, float]) -> dict:
    p, r = pred == c, ref == c
    tp = fp = fn = tn = 0
    for pv, rv in zip(p.ravel(), r.ravel()):  # the four counts by a loop over pixels
        tp += pv and rv
        fp += pv and not rv
        fn += rv and not pv
        tn += not pv and not rv
    both = np.concatenate([_surface_distances(p, r, spacing), _surface_distances(r, p, spacing)])
    ab, ba = _surface_distances(p, r, spacing), _surface_distances(r, p, spacing)
    return {
        "dice": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "volume_similarity": 1 - abs(fp - fn) / (2 * tp + fp + fn),
        "area_difference": (p.sum() - r.sum()) * spacing[0] * spacing[1],
        # HD95: the larger of the two directed 95th percentiles (MONAI's and the common
        # definition); ASD: the mean over both boundaries' distances.
        "hd95": max(np.percentile(ab, 95), np.percentile(ba, 95)),
        "asd": both.mean(),
    }


def _random_blobs(seed: int, shape=(40, 48), n_classes=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for c in range(1, n_classes):
        cy, cx = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
        ry, rx = rng.uniform(4, 10), rng.uniform(4, 12)
        out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = c
    return out


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 2.5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_figure_matches_the_naive_reference(spacing, seed):
    ref, pred = _random_blobs(seed), _random_blobs(seed + 100)
    pred[ref == 1] = np.where(np.random.default_rng(seed).random((ref == 1).sum()) < 0.7, 1, 0)
    rows = image_figures(pred, ref, 3, spacing)
    for c in (1, 2):
        got, want = rows[c - 1], _naive(pred, ref, c, spacing)
        if not (pred == c).any():
            continue
        assert got["case"] == "present"
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_anisotropic_spacing_scales_distances_along_its_axis():
    ref = np.zeros((30, 30), dtype=int)
    ref[10:20, 10:20] = 1
    pred = np.roll(ref, 3, axis=0)  # moved 3 rows down
    rows_iso = image_figures(pred, ref, 2, (1.0, 1.0))[0]
    rows_tall = image_figures(pred, ref, 2, (2.0, 1.0))[0]  # rows 2 mm apart
    rows_wide = image_figures(pred, ref, 2, (1.0, 2.0))[0]
    assert rows_iso["hd95"] == pytest.approx(3.0)
    assert rows_tall["hd95"] == pytest.approx(6.0)
    assert rows_wide["hd95"] == pytest.approx(3.0)  # the shift is along rows only
    assert rows_tall["area_difference"] == 0 and rows_tall["reference_area"] == 200.0


def test_empty_cases_have_their_own_rule_and_never_a_nan():
    h = w = 20
    ref = np.zeros((h, w), dtype=int)
    pred = np.zeros((h, w), dtype=int)
    ref[2:6, 2:6] = 1  # class 1: present in the reference only -> missed
    pred[10:12, 10:12] = 2  # class 2: predicted only -> false positive
    # class 3: in neither -> both empty
    rows = image_figures(pred, ref, 4)
    missed, false_pos, both = rows
    assert missed["case"] == "missed" and missed["dice"] == 0 and missed["sensitivity"] == 0
    assert missed["hd95"] == missed["asd"] == pytest.approx(math.hypot(h, w))
    assert false_pos["case"] == "false_positive" and "dice" not in false_pos
    assert false_pos["predicted_area"] == 4
    assert both["case"] == "both_empty" and "dice" not in both
    summary = summarise([rows], ["bg", "a", "b", "c"], spacing_known=False)
    a, b, c = (summary["per_class"][k] for k in "abc")
    assert a["dice"]["mean"] == 0 and a["empty"]["missed"] == 1
    assert b["dice"]["n"] == 0 and b["empty"]["false_positive"] == 1
    assert b["empty"]["false_positive_area"] == 4
    assert c["empty"]["both"] == 1 and c["dice"]["mean"] is None
    assert summary["mean_foreground_dice"] == 0  # only class a was scored
    assert summary["units"]["distance"] == "px"
    assert set(summary["empty_rules"]) == {
        "reference_and_prediction_empty",
        "reference_empty_prediction_not",
        "prediction_empty_reference_not",
    }


def test_over_and_under_segmentation_differ_in_sign_at_equal_hausdorff():
    ref = np.zeros((40, 40), dtype=int)
    ref[10:30, 10:30] = 1
    over, under = np.zeros_like(ref), np.zeros_like(ref)
    over[8:32, 8:32] = 1  # 2 px wider on every side
    under[12:28, 12:28] = 1  # 2 px narrower
    o, u = image_figures(over, ref, 2)[0], image_figures(under, ref, 2)[0]
    assert o["hd95"] == pytest.approx(u["hd95"], abs=0.25)  # 2 px either way (corners aside)
    assert o["area_difference"] > 0 > u["area_difference"]


def test_one_far_false_positive_spikes_hausdorff_not_dice():
    ref = np.zeros((64, 64), dtype=int)
    ref[10:30, 10:30] = 1
    pred = ref.copy()
    pred[60:63, 60:63] = 1  # a speck far away
    row = image_figures(pred, ref, 2)[0]
    assert row["dice"] > 0.98
    assert row["hd95"] > 0 and row["asd"] > 0
    clean = image_figures(ref, ref, 2)[0]
    assert clean["hd95"] == 0 and clean["dice"] == 1


def test_summary_statistics_and_size_terciles():
    rows = []
    for side in (2, 4, 6, 8, 10, 12):
        ref = np.zeros((30, 30), dtype=int)
        ref[:side, :side] = 1
        pred = np.zeros_like(ref)
        pred[: side - 1, :side] = 1  # one row short: Dice rises with the size
        rows.append(image_figures(pred, ref, 2))
    summary = summarise(rows, ["bg", "x"], spacing_known=True)
    dice = [r[0]["dice"] for r in rows]
    stats = summary["per_class"]["x"]["dice"]
    assert stats["mean"] == pytest.approx(np.mean(dice))
    assert stats["median"] == pytest.approx(np.median(dice))
    assert stats["q1"] == pytest.approx(np.percentile(dice, 25))
    small, medium, large = summary["per_class"]["x"]["by_size"]
    assert small["reference_area"] == [4.0, 16.0] and large["reference_area"] == [100.0, 144.0]
    assert small["dice"] == pytest.approx(np.mean(dice[:2]))
    assert small["dice"] < medium["dice"] < large["dice"]
    assert summary["units"] == {"distance": "mm", "area": "mm2"}


def test_quick_dice_matches_the_full_figures():
    ref = np.stack([_random_blobs(s) for s in range(4)])
    pred = np.stack([_random_blobs(s + 10) for s in range(4)])
    import torch

    quick = dice_scores(torch.as_tensor(pred), torch.as_tensor(ref), 3)
    for i in range(4):
        for c, row in enumerate(image_figures(pred[i], ref[i], 3)):
            if "dice" in row:
                assert float(quick[i, c]) == pytest.approx(row["dice"])
