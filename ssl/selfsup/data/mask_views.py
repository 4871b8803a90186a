"""Views of an image with its mask: every transform that moves pixels moves the mask the
same way, the image resampled bilinearly and the mask by nearest neighbour.

torchvision's v2 transforms do both from one random draw when the mask is wrapped as a
``tv_tensors.Mask`` (they resample masks with nearest-neighbour interpolation), so one
pipeline serves the pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.transforms import match_channels


class MaskViews:
    """Training views: a random resized crop (``scale`` of the area, aspect 3/4..4/3) at
    ``size`` x ``size``, a horizontal flip with ``flip_prob`` (0 by default: a flip turns
    a left structure into a right one), then the image normalised. Returns
    ``(image (C, size, size) float, mask (size, size) int64)``."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.5, 1.0),
        flip_prob: float = 0.0,
        channels: int | None = None,
    ) -> None:
        self.channels = channels
        self.geometry = v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True),
                                    v2.RandomHorizontalFlip(flip_prob)])  # fmt: skip
        self.normalise = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(mean=list(mean), std=list(std))])  # fmt: skip

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels is not None:
            image = match_channels(image, self.channels)
        image, mask = self.geometry(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return self.normalise(image.as_subclass(torch.Tensor)), mask.as_subclass(
            torch.Tensor
        ).long()
