"""Augmentation on the device: the view pipelines run on the batch, on the accelerator.

With ``--data.device_augment true`` the DataLoader's workers only decode and resize
(:class:`LoadTransform`: each image to a ``load_size`` square, kept in its dtype, so 8-bit
images travel as uint8); then, in Lightning's ``on_after_batch_transfer`` (right after
the step's seeded random streams are set, so a resumed run draws the same views),
:class:`DeviceViews` makes the method's views of the whole batch with kornia, every
sample with its own random parameters.

The device pipelines are translated block by block from the CPU pipelines themselves
(:func:`selfsup.transforms.view_pipeline`'s torchvision blocks), so one recipe holds for
both and every distribution is the same: crop scale and aspect ratio, flip, colour
jitter (brightness, contrast, saturation, hue factors, in random order, with the block's
probability), grayscale, Gaussian blur (kernel and sigma range, reflect padding),
solarisation at 0.5, normalisation.

What differs, by construction: crops are cut from the loaded square (the image's
central square at ``load_size`` px), not from the file at full resolution, so they never
reach beyond that square of a non-square image and a small crop is upsampled from
``load_size`` rather than from the original; kornia resizes bilinearly without
antialiasing. Default ``load_size``: the largest view size x 8/7 (256 for 224 px views).

Why kornia: batched per-sample augmentation on any torch device (stable-pretraining
measured 2.55x the samples/s of an 8-worker CPU pipeline on one H200 with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.errors import ConfigError
from selfsup.transforms import ViewTransform


def default_load_size(transform: ViewTransform) -> int:
    """The largest view size x 8/7 (the 256-for-224 convention of ImageNet's eval resize)."""
    return round(max(transform.view_sizes) * 8 / 7)


class LoadTransform:
    """What the workers do with device augmentation: ``(C, H, W)`` -> ``(C, S, S)`` with the
    shorter side resized to ``S`` and the centre cropped, in the image's own dtype."""

    def __init__(self, load_size: int) -> None:
        self.load_size = load_size
        self.pipeline = v2.Compose([v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.pipeline(image)


def _device_block(block: nn.Module) -> nn.Module | None:
    """The kornia block that draws what torchvision's ``block`` draws, per sample; None for
    the dtype conversion (done once per batch)."""
    inner, p = block, 1.0
    if isinstance(block, v2.RandomApply):
        if len(block.transforms) != 1:
            raise ConfigError("Device augmentation translates RandomApply of one block only.")
        inner, p = block.transforms[0], block.p
    if isinstance(inner, v2.ToDtype):
        return None
    if isinstance(inner, v2.RandomResizedCrop):
        return K.RandomResizedCrop(
            tuple(inner.size), scale=tuple(inner.scale), ratio=tuple(inner.ratio)
        )
    if isinstance(inner, v2.RandomHorizontalFlip):
        return K.RandomHorizontalFlip(p=inner.p)
    if isinstance(inner, v2.ColorJitter):
        # torchvision keeps each factor range (or None); kornia takes the same ranges.
        ranges = {
            name: getattr(inner, name) or 0.0
            for name in ("brightness", "contrast", "saturation", "hue")
        }
        ranges = {k: tuple(v) if isinstance(v, (tuple, list)) else v for k, v in ranges.items()}
        return K.ColorJitter(**ranges, p=p)
    if isinstance(inner, v2.RandomGrayscale):
        return K.RandomGrayscale(p=inner.p)
    if isinstance(inner, v2.GaussianBlur):
        return K.RandomGaussianBlur(
            tuple(inner.kernel_size), tuple(inner.sigma), border_type="reflect", p=p
        )
    if isinstance(inner, v2.RandomSolarize):
        if inner.threshold != 0.5:
            raise ConfigError(f"Device augmentation solarises at 0.5, not {inner.threshold}.")
        return K.RandomSolarize(thresholds=0.0, additions=0.0, p=inner.p)
    if isinstance(inner, v2.Normalize):
        return K.Normalize(mean=torch.tensor(inner.mean), std=torch.tensor(inner.std))
    raise ConfigError(f"Device augmentation has no translation of {type(inner).__name__}: "
                      "run the views in the workers (--data.device_augment false).")  # fmt: skip


class DeviceViews(nn.Module):
    """``images (B, C, S, S)`` (uint8, or float in [0, 1]) -> the list of the transform's
    views ``(B, C, size, size)``, each view's blocks with per-sample random parameters."""

    def __init__(self, transform: ViewTransform) -> None:
        super().__init__()
        self.views = nn.ModuleList(
            nn.Sequential(*[b for b in map(_device_block, pipeline.transforms) if b is not None])
            for pipeline in transform.pipelines
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        self.to(x.device)
        return [view(x) for view in self.views]


def with_views(batch: Any, make_views: Callable[[torch.Tensor], list[torch.Tensor]]) -> Any:
    """``batch`` with its images replaced by their views: ``(images, labels)`` or, from a
    method's collate function, ``((images, labels), extra)``."""
    first, rest = batch[0], batch[1:]
    if isinstance(first, torch.Tensor):
        return (make_views(first), *rest)
    return (with_views(first, make_views), *rest)
