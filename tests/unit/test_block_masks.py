"""iBOT's block-wise masks as DINOv2 draws them: the share of masked crops, the
stratified ratios, blocks that never overshoot, and the collate function."""

import pytest
import torch

from selfsup.block_masks import BlockMaskCollator, BlockMaskGenerator, draw_masks
from selfsup.errors import ConfigError


def test_a_block_mask_reaches_its_count_without_overshooting_by_blocks():
    torch.manual_seed(0)
    generator = BlockMaskGenerator((16, 16))
    exact = 0
    for wanted in range(0, 129, 4):
        mask = generator(wanted)
        assert mask.shape == (16, 16) and mask.dtype == torch.bool
        assert int(mask.sum()) <= wanted  # never more than asked
        exact += int(mask.sum()) == wanted
        if (
            wanted >= 4
        ):  # blocks, not scattered patches: most masked patches have a masked neighbour
            padded = torch.nn.functional.pad(mask.float(), (1, 1, 1, 1))
            neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
            assert (neighbours[mask] > 0).float().mean() > 0.9
    assert exact >= 30  # of 33: the reference's ten tries rarely fall short on 16 x 16


@pytest.mark.parametrize(("n", "probability"), [(64, 0.5), (10, 0.3), (8, 1.0), (8, 0.0)])
def test_masked_share_and_stratified_ratios_follow_dinov2(n, probability):
    torch.manual_seed(1)
    low, high, grid = 0.1, 0.5, (14, 14)
    masks = draw_masks(n, grid, (low, high), probability)
    assert masks.shape == (n, 196) and masks.dtype == torch.bool
    counts = masks.sum(1)
    n_masked = int(n * probability)
    assert int((counts > 0).sum()) == n_masked  # exactly int(n p) crops masked
    ratios = (counts[counts > 0].double() / 196).sort().values
    bounds = torch.linspace(low, high, n_masked + 1, dtype=torch.float64)
    # The i-th smallest ratio lies at most at the top of the i-th stratum (a mask may fall
    # a few patches short of its draw, never over), and at least near its bottom.
    assert (ratios <= bounds[1:] + 1e-9).all()
    assert (ratios >= bounds[:-1] - 0.05).all()


def test_masks_are_shuffled_among_the_crops_and_reproducible():
    torch.manual_seed(2)
    first = draw_masks(32, (8, 8))
    torch.manual_seed(2)
    assert torch.equal(first, draw_masks(32, (8, 8)))
    orders = set()
    for seed in range(5):
        torch.manual_seed(seed)
        orders.add(tuple((draw_masks(32, (8, 8)).sum(1) > 0).tolist()))
    assert len(orders) > 1  # not always the first half masked


def test_the_collator_masks_the_global_crops_on_their_patch_grid():
    torch.manual_seed(3)
    samples = [([torch.randn(1, 32, 32), torch.randn(1, 32, 32), torch.randn(1, 16, 16)], i)
               for i in range(5)]  # fmt: skip
    (views, labels), masks = BlockMaskCollator(patch_size=8)(samples)
    assert [v.shape[0] for v in views] == [5, 5, 5] and labels.tolist() == [0, 1, 2, 3, 4]
    assert masks.shape == (10, 16)  # 2 global crops x 5 images, a 4 x 4 grid
    assert int((masks.sum(1) > 0).sum()) == 5


@pytest.mark.parametrize(
    ("ratio", "probability"), [((0.5, 0.1), 0.5), ((0.1, 1.0), 0.5), ((0.1, 0.5), 1.5)]
)
def test_impossible_mask_options_are_one_line_errors(ratio, probability):
    with pytest.raises(ConfigError) as err:
        BlockMaskCollator(8, ratio, probability)
    assert "\n" not in str(err.value) and "DINOv2" in str(err.value)
