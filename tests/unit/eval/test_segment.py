"""The linear segmentation head on features whose classes are linearly separable per patch,
the split by patient, label fractions, and the logits' upsampling to each mask's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.eval.segment import SegmentationHeads, predict_maps, run_segment, upsampled


def _separable(n: int, grid: int, patch: int, seed: int, dim: int = 8):
    """Features ``(n, dim, grid, grid)`` whose patch class is one direction plus noise, and
    masks at ``grid * patch`` px that repeat each patch's class over its pixels."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, 3, (n, grid, grid), generator=g)
    directions = torch.randn(3, dim, generator=torch.Generator().manual_seed(99)) * 3
    features = directions[classes].permute(0, 3, 1, 2) + 0.3 * torch.randn(
        n, dim, grid, grid, generator=g
    )
    masks = classes.repeat_interleave(patch, 1).repeat_interleave(patch, 2).to(torch.uint8)
    return features, list(masks)


def test_a_head_on_separable_patches_reaches_dice_near_one():
    train_f, train_m = _separable(24, 6, 4, seed=0)
    test_f, test_m = _separable(8, 6, 4, seed=1)
    presence = np.ones((24, 2), dtype=int)
    groups = np.array([f"p{i // 2}" for i in range(24)])
    result, pred = run_segment(train_f, train_m, test_f, test_m, ["bg", "a", "b"], groups,
                               presence, [None] * 8, epochs=30, batch_size=8)  # fmt: skip
    # Only the pixels at patch borders can go wrong (bilinear upsampling blends neighbours).
    assert result["mean_foreground_dice"] > 0.9
    assert result["headline"] == {"metric": "mean_foreground_dice",
                                  "value": result["mean_foreground_dice"]}  # fmt: skip
    assert result["n_train"] + result["n_val"] == 24 and result["n_test"] == 8
    assert result["n_groups"]["train"] + result["n_groups"]["val"] == 12  # whole patients
    assert len(result["grid_val_mean_foreground_dice"]) == 5
    assert [p.shape for p in pred] == [(24, 24)] * 8
    assert result["units"]["distance"] == "px"


def test_random_features_stay_far_from_the_separable_figure():
    train_f, train_m = _separable(24, 6, 4, seed=0)
    test_f, test_m = _separable(8, 6, 4, seed=1)
    noise = torch.randn_like(train_f)
    result, _ = run_segment(noise, train_m, torch.randn_like(test_f), test_m, ["bg", "a", "b"],
                            None, np.ones((24, 2), dtype=int), [None] * 8, epochs=5)  # fmt: skip
    assert result["mean_foreground_dice"] < 0.6


def test_label_fractions_give_one_curve_row_per_fraction():
    train_f, train_m = _separable(24, 6, 4, seed=0)
    test_f, test_m = _separable(8, 6, 4, seed=1)
    result, pred = run_segment(train_f, train_m, test_f, test_m, ["bg", "a", "b"],
                               np.array([f"p{i // 2}" for i in range(24)]),
                               np.ones((24, 2), dtype=int), [None] * 8, epochs=5,
                               label_fractions=[0.5, 1.0], label_seeds=2)  # fmt: skip
    rows = result["label_curve"]
    assert [r["fraction"] for r in rows] == [0.5, 1.0] and rows[0]["n_seeds"] == 2
    assert rows[0]["n_labelled"] < rows[1]["n_labelled"]
    assert result["headline"]["metric"] == "mean_foreground_dice"
    assert len(result["runs"]) == 4 and len(pred) == 8


def test_logits_are_upsampled_to_each_masks_own_size():
    logits = torch.randn(2, 3, 4, 4)
    same = upsampled(logits, [(16, 16), (16, 16)])
    mixed = upsampled(logits, [(16, 16), (8, 12)])
    assert [tuple(t.shape) for t in mixed] == [(3, 16, 16), (3, 8, 12)]
    assert torch.allclose(same[0], mixed[0])
    heads = SegmentationHeads(2, 3, 3)
    maps = predict_maps(heads, logits, [(16, 16), (8, 12)])
    assert [[tuple(m.shape) for m in per_head] for per_head in maps] == [[(16, 16), (8, 12)]] * 2
    assert maps[0][0].dtype == torch.uint8


def test_the_stacked_heads_equal_separate_batchnorm_and_conv_heads():
    """The folded grid against DINOv2's head written plainly: BatchNorm2d + Conv2d 1x1."""
    torch.manual_seed(0)
    heads = SegmentationHeads(3, 6, 4)
    with torch.no_grad():
        heads.scale.uniform_(0.5, 2)
        heads.shift.normal_()
    x = torch.randn(5, 6, 7, 7) * 3 + 1
    for mode in ("train", "eval"):
        getattr(heads, mode)()
        got = heads(x)
        for h in range(3):
            norm = torch.nn.BatchNorm2d(6)
            norm.load_state_dict({**heads.norm.state_dict(), "weight": heads.scale[h].detach(),
                                  "bias": heads.shift[h].detach()})  # fmt: skip
            conv = torch.nn.Conv2d(6, 4, 1)
            conv.weight.data = heads.weight[h].detach()[..., None, None]
            conv.bias.data = heads.bias[h].detach()
            norm.train(mode == "train")
            torch.testing.assert_close(got[h], conv(norm(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dice_loss", [False, True])
def test_the_heads_learn_with_either_loss(dice_loss):
    train_f, train_m = _separable(16, 4, 4, seed=2)
    result, _ = run_segment(train_f, train_m, train_f[:4], train_m[:4], ["bg", "a", "b"], None,
                            np.ones((16, 2), dtype=int), [None] * 4, epochs=20,
                            dice_loss=dice_loss)  # fmt: skip
    assert result["mean_foreground_dice"] > 0.8 and result["dice_loss"] is dice_loss
