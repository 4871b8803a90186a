"""ViT features from the last blocks, as DINO's linear evaluation takes them."""

from __future__ import annotations

from typing import Any

import torch

from selfsup.errors import ConfigError


class LastBlocksFeatures(torch.nn.Module):
    """ViT features from the last ``n_blocks`` blocks, as DINO's linear evaluation takes
    them: each block's pooled token (its CLS token, or the mean of its patch tokens for
    ``pool='avg'``) after the final norm, concatenated, and optionally the mean of the
    last block's patch tokens appended (DINO: 4 blocks for ViT-S, 1 block + patches for
    ViT-B). Blocks come from timm's ``forward_intermediates``; ``n_blocks=1`` without
    patches equals the backbone's own pooled output."""

    def __init__(self, backbone: Any, n_blocks: int = 4, avgpool_patches: bool = False) -> None:
        super().__init__()
        if not getattr(backbone, "is_vit", False):
            raise ConfigError(
                "--last-blocks and --avgpool-patches apply to ViTs; a ResNet has one pooled feature."
            )
        depth = len(backbone.model.blocks)
        if not 1 <= n_blocks <= depth:
            raise ConfigError(
                f"--last-blocks {n_blocks}: the ViT has {depth} blocks; give 1..{depth}."
            )
        if avgpool_patches and backbone.pool == "avg":
            raise ConfigError(
                "--avgpool-patches adds the patch mean to CLS tokens, but this backbone pools by "
                "patch mean already: use --pool cls, or drop --avgpool-patches."
            )
        self.backbone, self.n_blocks, self.avgpool_patches = backbone, n_blocks, avgpool_patches
        self.embed_dim = backbone.embed_dim * (n_blocks + int(avgpool_patches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix = self.backbone.num_prefix_tokens > 0
        blocks = self.backbone.model.forward_intermediates(
            x, indices=self.n_blocks, norm=True, return_prefix_tokens=prefix,
            output_fmt="NLC", intermediates_only=True,
        )  # fmt: skip  # per block: (patch tokens (B, N, D), prefix tokens (B, P, D)) or patches
        if not prefix:
            blocks = [(patches, None) for patches in blocks]
        if self.backbone.pool == "cls":
            feats = [tokens[:, 0] for _, tokens in blocks]
        else:
            feats = [patches.mean(1) for patches, _ in blocks]
        if self.avgpool_patches:
            feats.append(blocks[-1][0].mean(1))
        return torch.cat(feats, dim=-1)


def block_features(loaded: Any, n_blocks: int, avgpool_patches: bool) -> Any:
    """``loaded`` with its backbone's output replaced by :class:`LastBlocksFeatures`
    (unchanged for one block without patches); the choice enters the cache key."""
    if n_blocks == 1 and not avgpool_patches:
        return loaded
    features = LastBlocksFeatures(loaded.backbone, n_blocks, avgpool_patches)
    name = f"last{n_blocks}" + ("+avgpatch" if avgpool_patches else "")
    return type(loaded)(features.eval(), {**loaded.meta, "features": name}, loaded.path)
