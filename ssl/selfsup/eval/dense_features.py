"""Dense features of a frozen backbone: a ViT's patch-token grid or a ResNet's feature map,
for the segmentation evaluator.

- ViT: the patch tokens of the last ``K`` blocks (after the final norm), each reshaped to
  its ``(h, w)`` grid and concatenated along channels, as DINOv2's linear segmentation
  evaluation takes them (``K = 1``: the last block; DINOv2's "+ms" uses the last 4).
  Prefix tokens (CLS, registers) are left out.
- ResNet: the last ``K`` stages' maps, the coarser ones upsampled bilinearly to the finest
  of them, concatenated along channels (``K = 1``: the last stage).

Images are resized whole to the segmentation size (no crop: every mask pixel keeps an
image pixel), and the logits are upsampled back to each mask's own size
(:mod:`selfsup.eval.segment`). Extraction and its cache are the evaluators' own
(:func:`selfsup.eval.features.split_features`): sharded over processes, gathered in
dataset order, keyed by the checkpoint, the features chosen and the size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.backbones import check_input_size
from selfsup.errors import ConfigError
from selfsup.transforms import match_channels


class DenseFeatures(nn.Module):
    """``(B, C, H, W)`` -> ``(B, D, h, w)``: the backbone's patch grid or feature map."""

    def __init__(self, backbone: Any, last: int = 1) -> None:
        super().__init__()
        if backbone.is_vit:
            depth = len(backbone.model.blocks)
            if not 1 <= last <= depth:
                raise ConfigError(
                    f"--last_blocks {last}: the ViT has {depth} blocks; give 1..{depth}."
                )
            self.embed_dim = backbone.embed_dim * last
        else:
            channels = [info["num_chs"] for info in backbone.model.feature_info]
            stages = channels[1:]  # feature_info's first entry is the stem
            if not 1 <= last <= len(stages):
                raise ConfigError(f"--stages {last}: the ResNet has {len(stages)} stages; give "
                                  f"1..{len(stages)}.")  # fmt: skip
            self.embed_dim = sum(stages[-last:])
        self.backbone, self.last = backbone, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.backbone.model
        if self.backbone.is_vit:
            maps = model.forward_intermediates(x, indices=self.last, norm=True, output_fmt="NCHW",
                                               intermediates_only=True)  # fmt: skip
            return torch.cat(maps, 1)
        maps = model.forward_intermediates(x, indices=self.last, intermediates_only=True)
        size = maps[0].shape[-2:]  # the finest of the stages taken
        maps = [m if m.shape[-2:] == size else
                nn.functional.interpolate(m, size, mode="bilinear", align_corners=False)
                for m in maps]  # fmt: skip
        return torch.cat(maps, 1).contiguous()

    def describe(self) -> str:
        if self.backbone.is_vit:
            return f"patch tokens of the last {self.last} block(s)"
        return f"feature maps of the last {self.last} stage(s)"


class DenseTransform:
    """Resize the whole image to ``size`` x ``size`` and normalise (no crop)."""

    def __init__(
        self, size: int, mean: list[float], std: list[float], channels: int | None
    ) -> None:
        self.size, self.channels = size, channels
        self.pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                    v2.Resize((size, size), antialias=True),
                                    v2.Normalize(mean=mean, std=std)])  # fmt: skip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels is not None:
            image = match_channels(image, self.channels)
        return self.pipeline(image)


class DenseLoaded:
    """A loaded backbone seen as a dense feature extractor: what
    :func:`~selfsup.eval.features.split_features` takes (``backbone``, ``meta``, ``path``,
    ``eval_transform()``), with the features and the size in the cache key."""

    def __init__(self, loaded: Any, last: int = 1, size: int | None = None) -> None:
        size = int(size or loaded.meta["image_size"])
        check_input_size(loaded.backbone, size)
        self.backbone = DenseFeatures(loaded.backbone, last).eval()
        kind = "vit" if loaded.backbone.is_vit else "resnet"
        self.meta = {**loaded.meta, "features": f"dense:{kind}:last{last}:{size}"}
        self.path, self.size, self.loaded = loaded.path, size, loaded
        channels = loaded.meta.get("in_chans")
        self._transform = DenseTransform(size, loaded.mean, loaded.std,
                                         int(channels) if channels else None)  # fmt: skip

    def eval_transform(self) -> DenseTransform:
        return self._transform
