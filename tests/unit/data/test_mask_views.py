"""A mask follows its image through crops, resizes and flips: each output pixel's class is
the class at the source pixel the image's (coordinate-valued) pixels say it came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from selfsup.data.mask_views import MaskViews


@pytest.mark.parametrize(("flip", "seed"), [(0.0, 0), (1.0, 1), (1.0, 2), (0.0, 3)])
def test_the_mask_moves_with_the_image(flip, seed):
    h, w = 48, 64
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.int64)
    for c in range(1, 4):  # blocks of three classes
        r, q = rng.integers(0, h - 16), rng.integers(0, w - 16)
        mask[r : r + 16, q : q + 16] = c
    rows, cols = np.mgrid[:h, :w].astype(np.float32)
    image = torch.from_numpy(np.stack([rows, cols, np.zeros_like(rows)]))  # source coordinates
    torch.manual_seed(seed)
    views = MaskViews(32, mean=[0, 0, 0], std=[1, 1, 1], scale=(0.3, 1.0), flip_prob=flip)
    out_image, out_mask = views(image, torch.from_numpy(mask))
    assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
    assert out_mask.dtype == torch.int64
    src_r = np.clip(np.round(out_image[0].numpy()).astype(int), 0, h - 1)
    src_c = np.clip(np.round(out_image[1].numpy()).astype(int), 0, w - 1)
    expected = mask[src_r, src_c]
    # Where the source's neighbourhood holds one class, nearest and bilinear agree exactly.
    uniform = (ndimage.maximum_filter(mask, 5) == ndimage.minimum_filter(mask, 5))[src_r, src_c]
    assert uniform.mean() > 0.5
    assert np.array_equal(out_mask.numpy()[uniform], expected[uniform])
    assert set(np.unique(out_mask.numpy())) <= {0, 1, 2, 3}  # never a blended class
    if flip:  # flipped: the source column falls from left to right
        assert out_image[1, :, 0].mean() > out_image[1, :, -1].mean()


def test_gray_images_are_converted_to_the_backbones_channels():
    views = MaskViews(16, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2], channels=3)
    image, mask = views(
        torch.zeros(1, 20, 20, dtype=torch.uint8), torch.zeros(20, 20, dtype=torch.uint8)
    )
    assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
