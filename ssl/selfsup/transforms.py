"""View pipelines shared by every method, built from torchvision v2 blocks.

Images arrive as tensors ``(C, H, W)``: ``uint8`` for 8-bit data, ``float32`` in
``[0, 1]`` for 16-bit data after its intensity policy (see ``selfsup.data``).
Each pipeline first converts to ``float32`` in ``[0, 1]``, so every block acts
the same on 8- and 16-bit images, and ends with normalisation.

Why not lightly's transforms: they work on PIL images (no 16-bit, no
single-channel float input) and name their switches ``cj_prob`` & co.; the
blocks here are torchvision v2 on tensors, named for what they do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from selfsup.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The milder colour jitter of BYOL (Table 6), which DINO reuses.
BYOL_COLOR_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}


def view_pipeline(
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
    color_jitter_prob: float = 0.8,
    color_jitter_strength: float = 1.0,
    brightness: float = 0.8,
    contrast: float = 0.8,
    saturation: float = 0.8,
    hue: float = 0.2,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.0,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    solarize_prob: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    grayscale: bool = False,
) -> v2.Compose:
    """One augmented view: crop, flip, colour jitter, grayscale, blur, solarize, normalise.

    A block with probability 0 is left out. ``grayscale=True`` (single-channel
    medical images) keeps only the intensity part of the colour jitter
    (brightness, contrast) and drops saturation, hue and random grayscale.
    """
    # Crop and flip before the conversion to float: an 8-bit image is cropped and resized
    # in uint8 (torchvision's integer kernels; 4.1 ms for a 512 px float image on one core
    # before), and only the view is converted.
    blocks: list[torch.nn.Module] = [
        v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True),
    ]
    if flip_prob > 0:
        blocks.append(v2.RandomHorizontalFlip(p=flip_prob))
    blocks.append(v2.ToDtype(torch.float32, scale=True))
    if color_jitter_prob > 0:
        s = color_jitter_strength
        jitter = (
            v2.ColorJitter(brightness=brightness * s, contrast=contrast * s)
            if grayscale
            else v2.ColorJitter(brightness * s, contrast * s, saturation * s, min(hue * s, 0.5))
        )
        blocks.append(v2.RandomApply([jitter], p=color_jitter_prob))
    if grayscale_prob > 0 and not grayscale:
        blocks.append(v2.RandomGrayscale(p=grayscale_prob))
    if blur_prob > 0:
        # Kernel of ~10 % of the image side, as in SimCLR; odd and at least 3.
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        blocks.append(
            v2.RandomApply([SeparableGaussianBlur(kernel, sigma=blur_sigma)], p=blur_prob)
        )
    if solarize_prob > 0:
        blocks.append(v2.RandomSolarize(threshold=0.5, p=solarize_prob))
    blocks.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(blocks)


def _blur_matrix(n: int, k: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """``(n, n)`` matrix ``M`` with ``x @ M`` the 1-D Gaussian blur (kernel ``k``, ``sigma``,
    reflect padding) of each row of ``x``: torchvision's kernel, the padding folded in."""
    half = (k - 1) * 0.5
    weight = torch.exp(-0.5 * (torch.linspace(-half, half, k, dtype=torch.float64) / sigma) ** 2)
    weight /= weight.sum()
    out = torch.arange(n).repeat_interleave(k)  # output column j, once per tap
    src = out + torch.arange(k).repeat(n) - k // 2
    src = src.abs()  # reflect at 0 (no edge repeat) ...
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src)  # ... and at n - 1
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((src, out), weight.repeat(n), accumulate=True)
    return matrix.to(dtype)


class SeparableGaussianBlur(v2.GaussianBlur):
    """torchvision's ``GaussianBlur`` (the same sigma draw, kernel and reflect padding),
    computed as two matrix products. Why not torchvision's: on tensors it convolves with
    the full k x k kernel, measured at 31 ms for one 224 px RGB view on one core (k = 23),
    more than the rest of SimCLR's pipeline (a single-channel separable conv2d was still
    16 ms); the Gaussian kernel is the outer product of two 1-D kernels, and each 1-D
    pass with its reflect padding is one banded matrix, so ``M_h^T x M_w`` is the same
    view at GEMM speed."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point() or inpt.ndim < 2:
            return super().transform(inpt, params)
        (kx, ky), (sx, sy) = self.kernel_size, params["sigma"]
        h, w = inpt.shape[-2:]
        if (
            min(h, w) <= max(kx, ky) // 2
        ):  # reflect padding needs the image wider than half the kernel
            return super().transform(inpt, params)
        rows = _blur_matrix(h, ky, float(sy), inpt.dtype).to(inpt.device)
        cols = _blur_matrix(w, kx, float(sx), inpt.dtype).to(inpt.device)
        return rows.T @ inpt @ cols


class ViewTransform:
    """Base of the multi-view pipelines: ``transform(image) -> list of views``.

    ``size`` is the side of the (global) views, ``mean``/``std`` the
    normalisation; evaluators read both from the checkpoint.
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pipelines: list[v2.Compose]

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [pipeline(image) for pipeline in self.pipelines]

    @property
    def n_views(self) -> int:
        return len(self.pipelines)

    @property
    def view_sizes(self) -> list[int]:
        return [self.size] * self.n_views

    def renormalise(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise every view with ``mean``/``std`` instead (the normalisation a run's
        starting weights were trained with)."""
        self.mean, self.std = tuple(mean), tuple(std)
        for pipeline in self.pipelines:
            for step in pipeline.transforms:
                if isinstance(step, v2.Normalize):
                    step.mean, step.std = list(mean), list(std)


class SimCLRTransform(ViewTransform):
    """SimCLR: two views from one symmetric pipeline (Chen et al., 2020, App. A).

    Defaults are the ImageNet recipe; at 32 px the CIFAR recipes drop the blur
    (``blur_prob: 0``) and use ``color_jitter_strength: 0.5``.
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        flip_prob: float = 0.5,
        color_jitter_prob: float = 0.8,
        color_jitter_strength: float = 1.0,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        solarize_prob: float = 0.0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        grayscale: bool = False,
    ) -> None:
        self.size, self.mean, self.std, self.grayscale = size, tuple(mean), tuple(std), grayscale
        pipeline = view_pipeline(
            size,
            scale=scale,
            flip_prob=flip_prob,
            color_jitter_prob=color_jitter_prob,
            color_jitter_strength=color_jitter_strength,
            grayscale_prob=grayscale_prob,
            blur_prob=blur_prob,
            solarize_prob=solarize_prob,
            mean=mean,
            std=std,
            grayscale=grayscale,
        )
        self.pipelines = [pipeline, pipeline]


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(channels, H, W)``: gray -> RGB by repetition, RGB -> gray by
    ITU-R 601 luminance (a gray file in a colour folder, or the other way round)."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1:
        return image.expand(channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        gray = (image.float() * weights).sum(0, keepdim=True)
        return gray.round().to(image.dtype) if image.dtype == torch.uint8 else gray
    raise ConfigError(f"Cannot convert {c}-channel images to {channels} channels.")


class EvalTransform:
    """Deterministic evaluation view: resize, centre crop, normalise.

    ``crop_ratio`` is the crop's share of the resized image: 0.875 is the
    ImageNet convention at 224 px; small images (<= 64 px) are used whole (1.0).
    ``channels``: convert images to the backbone's channel count first
    (:func:`match_channels`: a gray checkpoint read on RGB data, or the other way round).
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_ratio: float | None = None,
        channels: int | None = None,
    ) -> None:
        if crop_ratio is None:
            crop_ratio = 1.0 if size <= 64 else 0.875
        self.size = size
        self.crop_ratio = crop_ratio
        self.channels = channels
        self.pipeline = v2.Compose(
            [
                v2.ToDtype(torch.float32, scale=True),
                v2.Resize(round(size / crop_ratio), antialias=True),
                v2.CenterCrop(size),
                v2.Normalize(mean=list(mean), std=list(std)),
            ]
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels is not None:
            image = match_channels(image, self.channels)
        return self.pipeline(image)


class BYOLTransform(ViewTransform):
    """BYOL: two views from asymmetric pipelines (Grill et al., 2020, Table 6).

    View 1 always blurs and never solarizes; view 2 rarely blurs and sometimes
    solarizes. Colour jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2.
    At 32 px, the CIFAR recipes drop the blur (``blur_prob: [0, 0]``) and keep this
    jitter as it is (it is already milder than SimCLR's).
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        flip_prob: float = 0.5,
        color_jitter_prob: float = 0.8,
        color_jitter_strength: float = 1.0,
        grayscale_prob: float = 0.2,
        blur_prob: tuple[float, float] = (1.0, 0.1),
        solarize_prob: tuple[float, float] = (0.0, 0.2),
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        grayscale: bool = False,
    ) -> None:
        self.size, self.mean, self.std, self.grayscale = size, tuple(mean), tuple(std), grayscale
        self.pipelines = [
            view_pipeline(
                size,
                scale=scale,
                flip_prob=flip_prob,
                color_jitter_prob=color_jitter_prob,
                color_jitter_strength=color_jitter_strength,
                **BYOL_COLOR_JITTER,
                grayscale_prob=grayscale_prob,
                blur_prob=blur,
                solarize_prob=solarize,
                mean=mean,
                std=std,
                grayscale=grayscale,
            )
            for blur, solarize in zip(blur_prob, solarize_prob, strict=True)
        ]


class DINOTransform(ViewTransform):
    """DINO's multi-crop: 2 global views and ``n_local`` small local views (Caron et al., 2021).

    Global view 1 always blurs; global view 2 rarely blurs and sometimes
    solarizes; local views blur with p = 0.5 (the reference code's recipe).
    The teacher sees the global views only. Views come out as ``[g1, g2, l1,
    ..., lK]``; the two global views share one size and the local views another,
    so a method runs one backbone pass per size.

    Paper defaults (ViT, 224 px): global scale (0.4, 1), local 96 px at scale
    (0.05, 0.4), 8 (ViT-S/16 table) or 10 local views. The ResNet recipe uses
    global (0.14, 1) and local (0.05, 0.14). ``n_local: 0`` gives two-view DINO.
    """

    def __init__(
        self,
        size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        flip_prob: float = 0.5,
        color_jitter_prob: float = 0.8,
        color_jitter_strength: float = 1.0,
        grayscale_prob: float = 0.2,
        blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5),
        solarize_prob: float = 0.2,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        grayscale: bool = False,
    ) -> None:
        self.size, self.mean, self.std, self.grayscale = size, tuple(mean), tuple(std), grayscale
        self.local_size, self.n_local = local_size, n_local

        def pipeline(view_size: int, scale: tuple[float, float], blur: float, solarize: float):
            return view_pipeline(
                view_size,
                scale=scale,
                flip_prob=flip_prob,
                color_jitter_prob=color_jitter_prob,
                color_jitter_strength=color_jitter_strength,
                **BYOL_COLOR_JITTER,
                grayscale_prob=grayscale_prob,
                blur_prob=blur,
                solarize_prob=solarize,
                mean=mean,
                std=std,
                grayscale=grayscale,
            )

        blur_g1, blur_g2, blur_local = blur_prob
        local = pipeline(local_size, local_scale, blur_local, 0.0)
        self.pipelines = [
            pipeline(size, global_scale, blur_g1, 0.0),
            pipeline(size, global_scale, blur_g2, solarize_prob),
            *[local] * n_local,
        ]

    @property
    def view_sizes(self) -> list[int]:
        return [self.size, self.size] + [self.local_size] * self.n_local


class CropTransform(ViewTransform):
    """One view: random resized crop, optional flip, normalise (no colour augmentation).

    The view of the masked-image methods, whose pretext task supplies the
    difficulty: :class:`MAETransform` and :class:`IJEPATransform` set their papers' defaults.
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.2, 1.0),
        flip_prob: float = 0.5,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.pipelines = [
            view_pipeline(
                size,
                scale=scale,
                flip_prob=flip_prob,
                color_jitter_prob=0.0,
                grayscale_prob=0.0,
                mean=mean,
                std=std,
            )
        ]


class MAETransform(CropTransform):
    """MAE: random resized crop at scale (0.2, 1) and horizontal flip (He et al., 2022)."""


class IJEPATransform(CropTransform):
    """I-JEPA: random resized crop at scale (0.3, 1), no flip (Assran et al., 2023)."""

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.3, 1.0),
        flip_prob: float = 0.0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__(size, scale, flip_prob, mean, std)
