"""MAE reconstructions: original | masked | reconstruction, one PNG row per image."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from selfsup.data.datasets import read_picture
from selfsup.errors import ConfigError
from selfsup.transforms import EvalTransform, match_channels
from selfsup.viz.names import output_names

PADDING = 2


def reconstruction_rows(
    model: Any, meta: dict[str, Any], images: list[torch.Tensor], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(C, H, W)`` (uint8 or float in [0, 1]) -> panels ``(N, 3, C, S, S)`` in
    [0, 1] (original, masked, reconstruction) and the masked-patch MSE per image
    (in normalised pixels)."""
    size, mean, std = int(meta["image_size"]), meta["mean"], meta["std"]
    channels = int(meta["in_chans"])
    transform = EvalTransform(size, mean, std)
    x = torch.stack([transform(match_channels(im, channels)) for im in images])
    generator = torch.Generator().manual_seed(seed)
    masked, reconstruction, mask = model.reconstruct(x, generator=generator)
    mse = ((reconstruction - x) ** 2).flatten(1).sum(1) / (
        mask.sum(1) * model.patch_dim
    )  # only masked patches differ
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    panels = torch.stack([x, masked, reconstruction], dim=1) * s.unsqueeze(1) + m.unsqueeze(1)
    # Masked patches show as black, not as the normalised zero (the mean colour).
    patch = model.backbone.patch_size
    hidden = mask.view(-1, *model.grid).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    panels[:, 1] *= 1 - hidden.unsqueeze(1)
    return panels.clamp(0, 1), mse


def write_reconstructions(
    model: Any,
    meta: dict[str, Any],
    image_paths: list[str],
    out_dir: str | os.PathLike,
    upscale: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One PNG per image in ``out_dir``: ``<name>_mae.png`` with the three panels side
    by side, each ``upscale`` x the model's image size (default: at least 96 px);
    ``<name>`` is the stem, or a longer tail of the path where stems clash (see
    :func:`output_names`). ``model`` is a trained MAE (its ``reconstruct`` draws the
    masks) with its checkpoint metadata ``meta``."""
    missing = [p for p in image_paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"No such image file: {missing[0]}.")
    images = [read_picture(p) for p in image_paths]
    panels, mse = reconstruction_rows(model, meta, images, seed)
    size = panels.shape[-1]
    factor = upscale or max(1, math.ceil(96 / size))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, row in zip(output_names(image_paths), panels, strict=True):
        row = row.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
        grid = make_grid(row, nrow=3, padding=PADDING, pad_value=1.0)
        target = out / f"{name}_mae.png"
        save_image(grid, target)
        files.append(str(target))
    return {
        "task": "reconstruct",
        "files": files,
        "mse_masked": [round(float(v), 6) for v in mse],
        "mask_ratio": float(model.hparams.mask_ratio),
    }
