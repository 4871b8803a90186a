"""ViT attention maps (DINO's visualize_attention): the last block's CLS -> patch attention.

The weights are read through a forward hook on the last block's ``attn_drop``, whose
input is ``softmax(q k^T / sqrt(d))``. timm's fused attention (SDPA) never forms that
matrix, so fusion is switched off for the last block alone, for the one forward pass,
and restored after; every other block keeps its fused kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from selfsup.errors import ConfigError
from selfsup.viz.names import output_names


@contextmanager
def _unfused(attn: torch.nn.Module):
    previous = getattr(attn, "fused_attn", False)
    attn.fused_attn = False
    try:
        yield
    finally:
        attn.fused_attn = previous


@torch.no_grad()
def last_block_attention(backbone: Any, x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> the last block's attention ``(B, heads, T, T)`` over all tokens
    (prefix tokens first, then the patches in row-major order); rows sum to 1."""
    if not getattr(backbone, "is_vit", False):
        raise ConfigError(
            f"Attention maps need a ViT; this checkpoint's backbone is {backbone.name}."
        )
    attn = backbone.model.blocks[-1].attn
    if not hasattr(attn, "attn_drop"):
        raise ConfigError(
            f"{backbone.name}'s last block has no standard attention module to read weights from."
        )
    captured: list[torch.Tensor] = []
    hook = attn.attn_drop.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    try:
        with _unfused(attn):
            backbone.model.forward_features(x)
    finally:
        hook.remove()
    return captured[-1].float()


def attention_maps(backbone: Any, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Per-head maps over the patch grid ``(B, heads, h, w)``, and whether they are the
    CLS token's attention (True) or, for a ViT without one, the attention each patch
    receives averaged over query patches (False). Each head's map sums to 1."""
    weights = last_block_attention(backbone, x)
    n_prefix = backbone.num_prefix_tokens
    h, w = backbone.grid_size((x.shape[-2], x.shape[-1]))
    if backbone.model.cls_token is not None:
        maps, from_cls = weights[:, :, 0, n_prefix:], True
    else:
        maps, from_cls = weights[:, :, n_prefix:, n_prefix:].mean(2), False
    maps = maps / maps.sum(-1, keepdim=True)  # CLS->patches: drop the mass on prefix tokens
    return maps.reshape(*maps.shape[:2], h, w), from_cls


def mass_mask(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """The patches holding the top ``threshold`` share of each map's mass (DINO): sort
    descending and keep patches until the cumulative mass reaches ``threshold``."""
    flat = maps.flatten(-2)
    values, order = flat.sort(-1, descending=True)
    values = values / values.sum(-1, keepdim=True)
    before = values.cumsum(-1) - values  # mass of the larger patches
    keep_sorted = before < threshold
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep.view_as(maps)


def prepare_image(
    image: torch.Tensor,
    patch_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An image ``(C, H, W)`` (uint8, or float in [0, 1]) -> the normalised input
    ``(1, C, H', W')`` and the displayed image ``(C, H', W')`` in [0, 1]: resized (to
    ``size``, or so that the shorter side is ``short_side``, keeping the aspect) and
    cropped to multiples of the patch size."""
    from selfsup.transforms import match_channels

    img = match_channels(image, in_chans)
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    hh, ww = img.shape[-2:]
    if size is None:
        scale = (short_side or min(hh, ww)) / min(hh, ww)
        size = (max(patch_size, round(hh * scale)), max(patch_size, round(ww * scale)))
    img = F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    h, w = (size[0] // patch_size) * patch_size, (size[1] // patch_size) * patch_size
    if h == 0 or w == 0:
        raise ConfigError(f"--size {size}: each side must be at least the patch size {patch_size}.")
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    shown = img[0, :, top : top + h, left : left + w].clamp(0, 1)
    m = torch.tensor(list(mean)).view(-1, 1, 1)
    s = torch.tensor(list(std)).view(-1, 1, 1)
    return ((shown - m) / s)[None], shown


def upsample(maps: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(..., h, w)`` -> ``(..., h * p, w * p)``, each patch's value over its pixels."""
    return maps.repeat_interleave(patch_size, -2).repeat_interleave(patch_size, -1)


def to_rgb(shown: torch.Tensor) -> torch.Tensor:
    """A displayed image ``(C, H, W)`` as RGB (gray repeated)."""
    return shown.expand(3, -1, -1) if shown.shape[0] == 1 else shown[:3]


def _save_png(array: Any, path: Path, cmap: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, array, cmap=cmap)


def write_attention(
    loaded: Any,
    images: list[str],
    out: str | Path,
    threshold: float = 0.6,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """For each image: ``OUT/<name>/head-<i>.png``, ``mean.png``, ``mask.png`` (the
    thresholded mean map over the image) and ``image.png``; ``OUT/overview.png``.
    ``<name>`` is the file's stem, or a longer tail of its path where stems clash
    (``a/0.png``, ``b/0.png`` -> ``a_0``, ``b_0``; see :func:`output_names`)."""
    from selfsup.data.datasets import read_picture

    if not 0 < threshold <= 1:
        raise ConfigError(f"--threshold {threshold}: give the share of attention mass, in (0, 1].")
    backbone = loaded.backbone.eval()
    if not backbone.is_vit:
        raise ConfigError(
            f"Attention maps need a ViT; this checkpoint's backbone is {backbone.name} "
            "(a ResNet has no attention)."
        )
    missing = [path for path in images if not Path(path).is_file()]
    if missing:
        raise ConfigError(f"--image {missing[0]}: no such file.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = backbone.patch_size
    rows, written = [], []
    for path, name in zip(images, output_names(images), strict=True):
        x, shown = prepare_image(
            read_picture(path), p, backbone.in_chans, loaded.mean, loaded.std,
            short_side=int(loaded.meta["image_size"]), size=size,
        )  # fmt: skip
        maps, from_cls = attention_maps(backbone, x)
        maps = maps[0]  # (heads, h, w)
        mean_map = maps.mean(0)
        mask = mass_mask(mean_map, threshold)
        stem = out / name
        stem.mkdir(exist_ok=True)
        rgb = to_rgb(shown)
        _save_png(rgb.permute(1, 2, 0).numpy(), stem / "image.png")
        for i, head in enumerate(upsample(maps, p)):
            _save_png(head.numpy(), stem / f"head-{i}.png", cmap="inferno")
        _save_png(upsample(mean_map, p).numpy(), stem / "mean.png", cmap="inferno")
        keep = upsample(mask.float(), p)
        overlay = rgb * (0.25 + 0.75 * keep)  # outside the mask: darkened
        _save_png(overlay.clamp(0, 1).permute(1, 2, 0).numpy(), stem / "mask.png")
        rows.append((name, rgb, upsample(maps, p), upsample(mean_map, p), overlay))
        written.append(str(stem))
    title = (
        f"Last-block attention of the CLS token ({loaded.meta['loaded']} backbone)"
        if from_cls
        else f"No CLS token: attention each patch receives, mean over query patches "
        f"({loaded.meta['loaded']} backbone)"
    )
    _overview(rows, out / "overview.png", title, threshold)
    return {
        "task": "attention",
        "images": written,
        "overview": str(out / "overview.png"),
        "heads": int(maps.shape[0]),
        "cls_token": from_cls,
        "threshold": threshold,
        "backbone": loaded.meta["loaded"],
        "checkpoint": loaded.path,
    }


def _overview(rows: list[tuple], path: Path, title: str, threshold: float) -> None:
    """One figure: per image, the image, the mask, the mean map and every head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = rows[0][2].shape[0]
    cols = 3 + heads
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.8 * len(rows) + 0.6),
                             squeeze=False)  # fmt: skip
    for r, (name, rgb, head_maps, mean_map, overlay) in enumerate(rows):
        panels = [(rgb.permute(1, 2, 0), None, name), (overlay.permute(1, 2, 0), None,
                  f"top {threshold:.0%} mass"), (mean_map, "inferno", "mean of heads")]  # fmt: skip
        panels += [(m, "inferno", f"head {i}") for i, m in enumerate(head_maps)]
        for c, (array, cmap, label) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(array.clamp(0, 1).numpy() if cmap is None else array.numpy(), cmap=cmap)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
