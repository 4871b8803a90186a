"""DINO's attention-mask Jaccard: the kept patches of designed attention maps against a
mask, counted by hand; the best head picked on the training images only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

import selfsup.eval.attention_masks as am
from selfsup.data.segmentation import SegmentationSet


def test_jaccard_equals_sklearns():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 9, 7)) > 0.5
    assert am.jaccard(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        jaccard_score(b.ravel(), a.ravel()))  # fmt: skip
    empty = torch.zeros(3, 3, dtype=torch.bool)
    assert am.jaccard(empty, empty) == 1.0


def _maps(good_head: int):
    """Two heads on a 4 x 4 grid: the good head puts 0.4, 0.3, 0.2, 0.1 on the top-left
    2 x 2 patches (0.6 of the mass is reached within its first two patches, so it keeps
    (0,0) and (0,1): before-mass 0 and 0.4 < 0.6); the other spreads over the bottom row."""

    def attention_maps(backbone, x):
        b = x.shape[0]
        good = torch.zeros(4, 4)
        good[0, 0], good[0, 1], good[1, 0], good[1, 1] = 0.4, 0.3, 0.2, 0.1
        other = torch.zeros(4, 4)
        other[3] = torch.tensor([0.4, 0.3, 0.2, 0.1])
        heads = [other, other]
        heads[good_head] = good
        return torch.stack(heads)[None].expand(b, -1, -1, -1), True

    return attention_maps


def test_kept_patches_are_scored_against_the_foreground_and_the_best_head_comes_from_train(
    monkeypatch,
):
    mask = np.zeros((8, 8), np.uint8)
    mask[:2, :4] = 1  # the top two pixel rows of patches (0,0) and (0,1): 2 x 4 pixels
    data = SegmentationSet(lambda i: torch.zeros(1, 8, 8), [mask] * 3, ["bg", "organ"])
    monkeypatch.setattr(am, "attention_maps", _maps(good_head=1))
    rows, from_cls = am.attention_jaccards(None, lambda im: im.float(), data)
    # head 1 keeps patches (0,0), (0,1): 2 x 2 pixels each = rows 0-1, columns 0-3 -> exact
    assert rows.shape == (3, 3) and from_cls
    assert rows[0, 1] == pytest.approx(1.0)
    assert rows[0, 0] == 0.0  # the bottom row's patches miss the organ
    # the heads' mean: 0.2, 0.15, 0.1, 0.05 on top-left and on the bottom row; sorted
    # descending (ties in index order) it keeps 0.2, 0.2, 0.15 (before 0.4 < 0.6) and
    # 0.15 (before 0.55): patches (0,0), (3,0), (0,1), (3,1) -> the organ's 8 pixels
    # out of a union of 16
    assert rows[0, 2] == pytest.approx(0.5)
    report = am.attention_report(None, lambda im: im.float(), data, data)
    assert report["best_head"]["head"] == 1 and report["best_head"]["mean"] == pytest.approx(1.0)
    assert report["per_head_mean"] == [0.0, 1.0]
