"""Patch masks: MAE's per-sample random masking, and I-JEPA's multi-block masks
(Assran et al., CVPR 2023): a context block and target blocks.

The image is a grid of ``H x W`` patches, indexed row-major (``r * W + c``). Per batch,
one target block size and one context block size are drawn (scale and aspect ratio
independently uniform), shared by every sample so that lengths are nearly equal. Per
sample, ``n_targets`` target blocks go to uniformly random positions (anywhere the block
fits), then one context block; the context is that block minus the union of the
sample's targets. Targets may overlap each other, never the context.

Why not lightly's ``IJEPAMaskCollator``: after 20 failed tries it relaxes the
context/target exclusion (so the context can overlap the targets), it draws block scale
and aspect ratio from one shared random number (so large blocks are always tall), and
it must be the DataLoader's whole collate function. Here the exclusion is strict (an
impossible setting raises), the draws are independent, and :class:`MultiBlockMaskSampler`
works both inside :class:`MultiBlockMaskCollator` and directly, e.g. to pass masks in.

Equal lengths: every target block of a batch has the same ``h * w`` patches, so targets
need no truncation. Contexts are truncated to the batch's shortest by keeping a random
subset (the reference keeps the first k in sorted order, which always drops the
bottom rows of the context).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import default_collate

from selfsup.errors import ConfigError


def random_masking(
    batch: int, n_patches: int, mask_ratio: float, device: Any = None, generator: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random masking: ``keep`` ``(B, K)`` patch indices with
    ``K = int(L * (1 - mask_ratio))`` (as the reference), and ``restore`` ``(B, L)``
    (the argsort that puts [kept, masked] tokens back in grid order)."""
    noise = torch.rand(batch, n_patches, device=device, generator=generator)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    return shuffle[:, : int(n_patches * (1 - mask_ratio))], restore


def _check_range(name: str, low_high: tuple[float, float], upper: float | None) -> None:
    """Refuse a range that is not ``0 < low <= high`` (``<= upper`` when given)."""
    low, high = low_high
    if not 0 < low <= high or (upper is not None and high > upper):
        bound = f"0 < low <= high <= {upper}" if upper is not None else "0 < low <= high"
        raise ConfigError(
            f"{name}={tuple(low_high)} is not a valid range: give (low, high) with {bound}."
        )


class MultiBlockMaskSampler:
    """Draws I-JEPA context and target patch indices for a batch.

    Args:
        grid_size: patches per side ``S`` (an ``S x S`` grid) or ``(H, W)``.
        n_targets: target blocks per sample (the paper's M = 4).
        target_scale: range of a target block's area as a fraction of the grid.
        target_aspect_ratio: range of a target block's height / width.
        context_scale: range of the context block's area as a fraction of the grid.
        context_aspect_ratio: range of the context block's height / width.
        min_keep: fewest context patches left after removing the targets.
        max_tries: placements of the targets tried per sample (when no context position
            keeps ``min_keep`` patches) before giving up with a ConfigError.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        n_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect_ratio: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        max_tries: int = 50,
    ) -> None:
        height, width = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        if height < 1 or width < 1:
            raise ConfigError(
                f"grid_size={grid_size} must be positive: give patches per side (image size / patch size)."
            )
        if n_targets < 1:
            raise ConfigError(f"n_targets={n_targets} must be at least 1 (the paper uses 4).")
        _check_range("target_scale", target_scale, 1.0)
        _check_range("context_scale", context_scale, 1.0)
        _check_range("target_aspect_ratio", target_aspect_ratio, None)
        _check_range("context_aspect_ratio", context_aspect_ratio, None)
        if not 1 <= min_keep <= height * width:
            raise ConfigError(
                f"min_keep={min_keep} context patches cannot be kept on a {height}x{width} grid: "
                f"give min_keep between 1 and {height * width}, or a larger grid."
            )
        if max_tries < 1:
            raise ConfigError(f"max_tries={max_tries} must be at least 1.")
        self.height, self.width = height, width
        self.n_targets = n_targets
        self.target_scale = tuple(target_scale)
        self.target_aspect_ratio = tuple(target_aspect_ratio)
        self.context_scale = tuple(context_scale)
        self.context_aspect_ratio = tuple(context_aspect_ratio)
        self.min_keep = min_keep
        self.max_tries = max_tries

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for a batch, as patch indices of equal length per batch.

        Args:
            batch_size: samples ``B``.
            generator: a CPU generator; ``None`` uses torch's global RNG.

        Returns:
            context ``(B, Nc)`` int64 sorted patch indices, disjoint from that sample's targets;
            targets ``(B, n_targets, Nt)`` int64 patch indices of whole blocks, row-major.
        """
        contexts, targets = self.sample_untruncated(batch_size, generator)
        keep = min(len(c) for c in contexts)
        # A random subset (sorted again) rather than the first k, which would always drop
        # the context's bottom rows.
        context = torch.stack(
            [c[torch.randperm(len(c), generator=generator)[:keep].sort().values] for c in contexts]
        )
        return context, targets

    def sample_untruncated(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`sample` before the contexts are cut to equal length.

        Returns:
            contexts: ``B`` sorted int64 index tensors of lengths ``>= min_keep``: the context
            block minus the union of that sample's targets; targets as in :meth:`sample`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1.")
        target_hw = self._block_size(self.target_scale, self.target_aspect_ratio, generator)
        context_hw = self._block_size(self.context_scale, self.context_aspect_ratio, generator)
        contexts, targets = [], []
        for _ in range(batch_size):
            context, sample_targets = self._sample_one(target_hw, context_hw, generator)
            contexts.append(context)
            targets.append(sample_targets)
        return contexts, torch.stack(targets)

    def _block_size(
        self,
        scale: tuple[float, float],
        aspect_ratio: tuple[float, float],
        generator: torch.Generator | None,
    ) -> tuple[int, int]:
        """``(h, w)`` of a block of uniform scale and, independently, uniform aspect ratio."""
        u = torch.rand(2, generator=generator).tolist()
        s = scale[0] + u[0] * (scale[1] - scale[0])
        a = aspect_ratio[0] + u[1] * (aspect_ratio[1] - aspect_ratio[0])
        area = s * self.height * self.width
        h = min(max(round(math.sqrt(area * a)), 1), self.height)
        w = min(max(round(math.sqrt(area / a)), 1), self.width)
        return h, w

    def _place(self, hw: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
        """A ``(H, W)`` bool mask of an ``h x w`` block at a uniform position where it fits."""
        h, w = hw
        top = int(torch.randint(self.height - h + 1, (1,), generator=generator))
        left = int(torch.randint(self.width - w + 1, (1,), generator=generator))
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        mask[top : top + h, left : left + w] = True
        return mask

    def _sample_one(
        self,
        target_hw: tuple[int, int],
        context_hw: tuple[int, int],
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample's context indices ``(Nc,)`` and target indices ``(n_targets, h * w)``.

        The context block goes to a uniform position among those that keep at least
        ``min_keep`` patches outside the targets (the distribution of redrawing until one
        does, found in one pass); only when no position does are the targets redrawn.
        """
        h, w = context_hw
        for _ in range(self.max_tries):
            blocks = torch.stack([self._place(target_hw, generator) for _ in range(self.n_targets)])
            covered = blocks.any(dim=0)
            # Free patches under every context position, from an integral image.
            free = torch.nn.functional.pad((~covered).long().cumsum(0).cumsum(1), (1, 0, 1, 0))
            kept = free[h:, w:] - free[:-h, w:] - free[h:, :-w] + free[:-h, :-w]
            valid = (kept >= self.min_keep).flatten().nonzero().squeeze(1)
            if len(valid) == 0:
                continue
            pick = int(valid[torch.randint(len(valid), (1,), generator=generator)])
            top, left = divmod(pick, self.width - w + 1)
            context = torch.zeros_like(covered)
            context[top : top + h, left : left + w] = True
            context &= ~covered
            # nonzero() lists a row-major mask's indices in ascending order.
            return (
                context.flatten().nonzero().squeeze(1),
                blocks.flatten(1).nonzero()[:, 1].view(self.n_targets, -1),
            )
        raise ConfigError(
            f"Could not keep min_keep={self.min_keep} context patches outside {self.n_targets} "
            f"target blocks of {target_hw[0]}x{target_hw[1]} patches (context block "
            f"{context_hw[0]}x{context_hw[1]}) on a {self.height}x{self.width} grid after "
            f"{self.max_tries} placements of the targets: use fewer targets (n_targets) or smaller "
            "ones (target_scale), a larger context_scale, or a lower min_keep."
        )


class MultiBlockMaskCollator:
    """collate_fn for a DataLoader: ``default_collate(batch)`` plus masks for the batch.

    Uses torch's global RNG, which the pretraining loader seeds from (seed, epoch, the
    batch's first index) right before this runs (:mod:`selfsup.data.streams`), so the
    masks do not depend on the worker or on a resume. A plain object (no lambdas), so it
    pickles into worker processes.
    """

    def __init__(self, sampler: MultiBlockMaskSampler) -> None:
        self.sampler = sampler

    def __call__(self, batch: list) -> tuple[Any, tuple[torch.Tensor, torch.Tensor]]:
        """``(collated, (context (B, Nc), targets (B, n_targets, Nt)))`` for ``B = len(batch)``."""
        return default_collate(batch), self.sampler.sample(len(batch))
