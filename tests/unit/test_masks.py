import math
import pickle
from collections import Counter

import pytest
import torch

from selfsup.masks import MultiBlockMaskCollator, MultiBlockMaskSampler

GRIDS = [(8, 8), (14, 14), (6, 10)]
TARGET_SCALE, TARGET_ASPECT_RATIO = (0.15, 0.2), (0.75, 1.5)  # the sampler's defaults


def rectangle(indices: torch.Tensor, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the bounding box of row-major patch indices."""
    rows, cols = (indices // width).tolist(), (indices % width).tolist()
    top, left = min(rows), min(cols)
    return top, left, max(rows) - top + 1, max(cols) - left + 1


def cells(top: int, left: int, h: int, w: int, width: int) -> set[int]:
    return {r * width + c for r in range(top, top + h) for c in range(left, left + w)}


def size_fits(h, w, height, width, scale, aspect_ratio) -> bool:
    """Whether an h x w block can come from some scale and aspect ratio in the ranges.

    Rounding to whole patches puts sqrt(area * a) within 0.5 of h (above h - 0.5 only when
    clamped to the grid, and below 1.5 when clamped to 1), and likewise sqrt(area / a) for w.
    Their product is the area and their ratio the aspect ratio.
    """
    h_lo, h_hi = (h - 0.5 if h > 1 else 0.0), (h + 0.5 if h < height else math.inf)
    w_lo, w_hi = (w - 0.5 if w > 1 else 0.0), (w + 0.5 if w < width else math.inf)
    n, eps = height * width, 1e-9
    area_ok = h_lo * w_lo <= scale[1] * n + eps and h_hi * w_hi >= scale[0] * n - eps
    ratio_ok = h_lo / w_hi <= aspect_ratio[1] + eps and (
        w_lo == 0 or h_hi / w_lo >= aspect_ratio[0] - eps
    )
    return area_ok and ratio_ok


def test_size_fits_rejects_wrong_sizes():
    assert size_fits(6, 5, 14, 14, (0.15, 0.2), (0.75, 1.5))
    assert not size_fits(3, 3, 14, 14, (0.15, 0.2), (0.75, 1.5))  # too small
    assert not size_fits(10, 3, 14, 14, (0.15, 0.2), (0.75, 1.5))  # right area, too tall
    assert not size_fits(14, 14, 14, 14, (0.15, 0.2), (0.75, 1.5))


@pytest.mark.parametrize("grid", GRIDS)
def test_masks_are_valid_blocks(grid):
    height, width = grid
    n = height * width
    sampler = MultiBlockMaskSampler(grid)
    g = torch.Generator().manual_seed(height * width)
    for _ in range(200):
        state = g.get_state()
        contexts, targets = sampler.sample_untruncated(8, g)
        g.set_state(state)
        context, targets_again = sampler.sample(8, g)
        assert targets.dtype == context.dtype == torch.int64
        assert torch.equal(targets, targets_again)  # the same draw, only truncated
        assert context.shape[1] == min(len(c) for c in contexts)
        assert targets.shape[:2] == (8, 4)
        assert int(context.min()) >= 0 and int(context.max()) < n
        assert int(targets.min()) >= 0 and int(targets.max()) < n

        block = rectangle(targets[0, 0], width)[2:]
        assert size_fits(*block, height, width, TARGET_SCALE, TARGET_ASPECT_RATIO)
        for full, kept, sample_targets in zip(contexts, context, targets):
            # Sorted, unique, a subset of the untruncated context, at least min_keep long.
            assert torch.equal(kept, torch.unique(kept))
            assert set(kept.tolist()) <= set(full.tolist())
            assert torch.equal(full, torch.unique(full)) and len(full) >= 10
            covered = set()
            for t in sample_targets:
                # Every target is a whole block of the batch's size, disjoint from the context.
                top, left, h, w = rectangle(t, width)
                assert (h, w) == block and sorted(t.tolist()) == sorted(
                    cells(top, left, h, w, width)
                )
                assert not set(t.tolist()) & set(full.tolist())
                covered |= set(t.tolist())
            # The context is a block minus the targets: its bounding box lacks only target
            # patches. At scale <= 1 and aspect ratio 1 a side is at most round(sqrt(H * W)).
            top, left, h, w = rectangle(full, width)
            assert h <= min(height, round(math.sqrt(n))) and w <= min(width, round(math.sqrt(n)))
            assert cells(top, left, h, w, width) - set(full.tolist()) <= covered


def test_block_sizes_vary_and_scale_and_aspect_ratio_are_independent():
    g = torch.Generator().manual_seed(0)
    sampler = MultiBlockMaskSampler(32, n_targets=1)
    sizes = [rectangle(sampler.sample(1, g)[1][0, 0], 32)[2:] for _ in range(200)]
    scales = [h * w / 32**2 for h, w in sizes]
    assert len(set(sizes)) >= 10
    assert min(scales) < 0.16 and max(scales) > 0.19  # both ends of (0.15, 0.2)
    # One shared random number would tie large blocks to tall ones; independent draws
    # give all four combinations of small/large and tall/wide.
    sampler = MultiBlockMaskSampler(
        32, n_targets=1, target_scale=(0.05, 0.3), target_aspect_ratio=(0.5, 2.0)
    )
    sizes = [rectangle(sampler.sample(1, g)[1][0, 0], 32)[2:] for _ in range(200)]
    assert {(h * w > 0.175 * 32**2, h > w) for h, w in sizes} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }


@pytest.mark.parametrize("grid", GRIDS)
def test_positions_differ_between_samples_and_reach_every_edge(grid):
    height, width = grid
    sampler = MultiBlockMaskSampler(grid)
    g = torch.Generator().manual_seed(1)
    touched = set()
    for _ in range(50):
        _, targets = sampler.sample(8, g)
        assert len({tuple(t.flatten().tolist()) for t in targets}) > 1
        rows, cols = (targets // width).flatten().tolist(), (targets % width).flatten().tolist()
        sides = {"top": 0 in rows, "bottom": height - 1 in rows}
        sides |= {"left": 0 in cols, "right": width - 1 in cols}
        touched |= {side for side, hit in sides.items() if hit}
    assert touched == {"top", "bottom", "left", "right"}


def test_positions_are_uniform_over_every_place_a_block_fits():
    # A fixed 4x4 block on an 8x8 grid fits at 5 tops and 5 lefts (including the last row/column).
    sampler = MultiBlockMaskSampler(
        8, n_targets=1, target_scale=(0.25, 0.25), target_aspect_ratio=(1.0, 1.0), min_keep=1
    )
    g = torch.Generator().manual_seed(2)
    corners = Counter()
    for _ in range(100):
        for t in sampler.sample(20, g)[1][:, 0]:
            top, left, h, w = rectangle(t, 8)
            assert (h, w) == (4, 4)
            corners[top, left] += 1
    assert set(corners) == {(r, c) for r in range(5) for c in range(5)}
    # 2000 draws over 25 corners: 80 expected each; 4 standard deviations is about 35.
    assert all(45 < k < 115 for k in corners.values())


def test_min_keep_is_respected():
    g = torch.Generator().manual_seed(3)

    def shortest_contexts(min_keep: int) -> list[int]:
        sampler = MultiBlockMaskSampler(8, min_keep=min_keep)
        return [min(len(c) for c in sampler.sample_untruncated(8, g)[0]) for _ in range(50)]

    assert min(shortest_contexts(10)) < 20  # so min_keep=20 has something to refuse
    assert min(shortest_contexts(20)) >= 20


def test_context_position_is_uniform_over_the_positions_that_keep_enough():
    # One 4 x 4 target in the top-left corner of 8 x 8 (scale 0.25, aspect 1), a 6 x 6
    # context block (scale 0.5625): of its 9 positions, those keeping >= 30 free
    # patches are the ones overlapping the target by <= 6 patches.
    sampler = MultiBlockMaskSampler(8, n_targets=1, target_scale=(0.25, 0.25),
                                    target_aspect_ratio=(1.0, 1.0), context_scale=(0.5625, 0.5625),
                                    min_keep=30)  # fmt: skip
    sampler._place = lambda hw, g: _corner_block(hw)  # the target always in the corner
    counts = {}
    g = torch.Generator().manual_seed(5)
    for _ in range(900):
        corner = _context_corner(sampler, g)
        counts[corner] = counts.get(corner, 0) + 1
    expected = {(t, c) for t in range(3) for c in range(3) if (4 - t) * (4 - c) <= 6}
    assert set(counts) == expected
    n = 900 / len(expected)
    assert all(abs(k - n) < 4 * n**0.5 for k in counts.values())


def _corner_block(hw):
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[: hw[0], : hw[1]] = True
    return mask


def _context_corner(sampler, g) -> tuple[int, int]:
    """Top-left corner of the 6 x 6 context block whose free patches were kept."""
    context, _ = sampler._sample_one((4, 4), (6, 6), g)
    kept = torch.zeros(8, 8, dtype=torch.bool)
    kept.view(-1)[context] = True
    for t in range(3):
        for c in range(3):
            window = torch.zeros(8, 8, dtype=torch.bool)
            window[t : t + 6, c : c + 6] = True
            window[:4, :4] = False
            if torch.equal(window, kept):
                return t, c
    raise AssertionError("the context is not a 6 x 6 block minus the target")


def test_impossible_settings_raise():
    sampler = MultiBlockMaskSampler(8, n_targets=4, target_scale=(0.9, 1.0), max_tries=10)
    with pytest.raises(ValueError, match=r"n_targets.*target_scale.*min_keep"):
        sampler.sample(2, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_scale": (0.0, 0.2)}, "target_scale"),
        ({"target_scale": (0.3, 0.2)}, "target_scale"),
        ({"context_scale": (0.85, 1.2)}, "context_scale"),
        ({"target_aspect_ratio": (1.5, 0.75)}, "target_aspect_ratio"),
        ({"context_aspect_ratio": (0.0, 1.0)}, "context_aspect_ratio"),
        ({"n_targets": 0}, "n_targets"),
        ({"min_keep": 65}, "min_keep"),
        ({"min_keep": 0}, "min_keep"),
        ({"max_tries": 0}, "max_tries"),
        ({"grid_size": 0}, "grid_size"),
    ],
)
def test_constructor_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiBlockMaskSampler(**{"grid_size": 8, **kwargs})


def test_generator_and_global_rng_make_draws_reproducible():
    sampler = MultiBlockMaskSampler(14)
    a = sampler.sample(4, torch.Generator().manual_seed(5))
    b = sampler.sample(4, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    torch.manual_seed(5)
    c = sampler.sample(4)
    torch.manual_seed(5)
    d = sampler.sample(4)
    assert all(torch.equal(x, y) for x, y in zip(c, d))


def test_collator_collates_and_pickles():
    collator = MultiBlockMaskCollator(MultiBlockMaskSampler((6, 10), n_targets=3))
    collator = pickle.loads(pickle.dumps(collator))
    batch = [(torch.full((3, 4, 4), float(i)), i) for i in range(5)]
    (images, labels), (context, targets) = collator(batch)
    assert images.shape == (5, 3, 4, 4) and torch.equal(images[:, 0, 0, 0], torch.arange(5.0))
    assert torch.equal(labels, torch.arange(5))
    assert context.shape[0] == 5 and context.shape[1] >= 10
    assert targets.shape[:2] == (5, 3)
    assert not set(context[0].tolist()) & set(targets[0].flatten().tolist())
