"""Block-wise patch masks for iBOT's masked-image loss, as DINOv2 draws them.

BEiT (Bao et al., ICLR 2022), Algorithm 1: a mask grows by rectangular blocks of at
least 4 patches, aspect ratio log-uniform in (0.3, 1/0.3), each block adding only new
patches and never more than are still wanted, until the wanted number is reached or
ten tries in a row add nothing (so a mask may fall a little short, as the reference's).
DINOv2 (``dinov2/data/masking.py``, ``dinov2/data/collate.py``): of the batch's ``n``
global crops, ``int(n x mask_probability)`` are masked (0.5); their ratios are spread
over ``mask_ratio`` (0.1, 0.5) by stratification (crop ``i`` draws uniformly within
the ``i``-th of ``int(n p)`` equal slices of the range), a single block is at most half
the grid, and the masks are shuffled among the crops.

Random numbers come from torch's global generator, which the pretraining loader seeds
per batch before the collate function runs (:mod:`selfsup.data.streams`), so masks do
not depend on the worker or on a resume (the reference uses Python's ``random``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import default_collate

from selfsup.errors import ConfigError


def _uniform(low: float, high: float) -> float:
    return low + float(torch.rand(())) * (high - low)


class BlockMaskGenerator:
    """Draws one ``(H, W)`` block-wise mask with a wanted number of masked patches.

    Args:
        grid: patches per side ``(H, W)``.
        min_block: fewest patches in one block (4).
        max_block: most patches in one block (DINOv2: half the grid).
        min_aspect: block aspect ratios are log-uniform in ``(min_aspect, 1 / min_aspect)``.
    """

    def __init__(self, grid: tuple[int, int], min_block: int = 4, max_block: int | None = None,
                 min_aspect: float = 0.3) -> None:  # fmt: skip
        self.height, self.width = grid
        self.min_block = min_block
        self.max_block = max_block if max_block is not None else self.height * self.width // 2
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def _add_block(self, mask: torch.Tensor, most: int) -> int:
        """Mask one more block of at most ``most`` new patches; the number added."""
        for _ in range(10):
            area = _uniform(self.min_block, most)
            aspect = math.exp(_uniform(*self.log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (h < self.height and w < self.width):
                continue
            top = int(torch.randint(self.height - h + 1, ()))
            left = int(torch.randint(self.width - w + 1, ()))
            block = mask[top : top + h, left : left + w]
            new = h * w - int(block.sum())
            if 0 < new <= most:
                block.fill_(True)
                return new
        return 0

    def __call__(self, n_masked: int) -> torch.Tensor:
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < n_masked:
            added = self._add_block(mask, min(n_masked - count, self.max_block))
            if added == 0:
                break
            count += added
        return mask


def draw_masks(n_crops: int, grid: tuple[int, int], mask_ratio: tuple[float, float] = (0.1, 0.5),
               mask_probability: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Masks for ``n_crops`` global crops: ``(n_crops, H * W)`` bool, row-major patches;
    ``int(n_crops x mask_probability)`` of them masked, at ratios stratified over
    ``mask_ratio``, in random order."""
    generator = BlockMaskGenerator(grid)
    n_patches = grid[0] * grid[1]
    n_masked = int(n_crops * mask_probability)
    bounds = torch.linspace(mask_ratio[0], mask_ratio[1], n_masked + 1).tolist()
    masks = [
        generator(int(n_patches * _uniform(bounds[i], bounds[i + 1]))) for i in range(n_masked)
    ]
    masks += [torch.zeros(grid, dtype=torch.bool)] * (n_crops - n_masked)
    order = torch.randperm(n_crops).tolist()
    return torch.stack([masks[i] for i in order]).flatten(1)


def check_mask_options(mask_ratio: tuple[float, float], mask_probability: float) -> None:
    """One-line errors for a ratio range outside ``0 <= low <= high < 1`` or a probability outside [0, 1]."""
    low, high = mask_ratio
    if not 0 <= low <= high < 1:
        raise ConfigError(f"mask_ratio={tuple(mask_ratio)} is not a range of ratios: give (low, high) "
                          "with 0 <= low <= high < 1 (DINOv2: [0.1, 0.5]).")  # fmt: skip
    if not 0 <= mask_probability <= 1:
        raise ConfigError(f"mask_probability={mask_probability} must lie in [0, 1] (DINOv2: 0.5).")


class BlockMaskCollator:
    """collate_fn for multi-crop batches: ``(default_collate(batch), masks)`` with
    ``masks`` ``(2B, H * W)`` bool for the two global crops (crop 1's images first, as
    ``torch.cat(views[:2])``). The grid is ``grid`` when given (the global crops' size over
    the patch size; needed when the workers send images and the views are made on the
    device), else read from the first global crop of the batch. A plain object, so it
    pickles into worker processes."""

    def __init__(self, patch_size: int, mask_ratio: tuple[float, float] = (0.1, 0.5),
                 mask_probability: float = 0.5, grid: tuple[int, int] | None = None) -> None:  # fmt: skip
        check_mask_options(mask_ratio, mask_probability)
        self.patch_size = patch_size
        self.mask_ratio = tuple(mask_ratio)
        self.mask_probability = mask_probability
        self.grid = grid

    def __call__(self, batch: list) -> tuple[Any, torch.Tensor]:
        collated = default_collate(batch)
        images, labels = collated[0], collated[1]
        grid = self.grid
        if grid is None:
            h, w = images[0].shape[-2:]  # views are [global_1, global_2, local_1, ...]
            grid = (h // self.patch_size, w // self.patch_size)
        masks = draw_masks(2 * len(labels), grid, self.mask_ratio, self.mask_probability)
        return collated, masks
