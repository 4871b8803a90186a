"""One backbone factory over timm: ResNets (with a CIFAR-stem option) and ViTs.

Every backbone answers the same contract:

- ``backbone(x)`` -> pooled features ``(B, D)``, pooled the way the backbone is
  evaluated (global average for ResNets, CLS token or average of patch tokens
  for ViTs);
- ``backbone.embed_dim`` -> ``D``;
- ``backbone.forward_tokens(x)`` -> ViT patch tokens ``(B, N, D)`` after the
  final norm (ViTs only);
- ``backbone.model`` is the plain timm model (the CIFAR stem replaces two of
  its modules); :func:`build_backbone` rebuilds any backbone from its name and
  kwargs.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from selfsup.errors import ConfigError

Pool = Literal["cls", "avg"]

#: Backbones the factory knows how to configure. Any other timm ResNet or ViT
#: name works too; these are the ones the configs and tests use.
KNOWN_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "vit_tiny",
    "vit_small",
    "vit_base",
)

# Short ViT names map to timm's registered architectures; the patch size and
# image size given to the factory override the registered defaults.
_VIT_ALIASES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}


def is_vit_name(name: str) -> bool:
    return name.startswith("vit")


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError naming close matches when ``name`` is no ResNet or ViT timm knows."""
    timm_name = _VIT_ALIASES.get(name, name)
    if timm.is_model(timm_name) and (name.startswith("resnet") or is_vit_name(name)):
        return
    candidates = list(KNOWN_BACKBONES) + timm.list_models("resnet*") + timm.list_models("vit_*")
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown backbone {name!r}: selfsup builds timm ResNets and ViTs "
        f"(e.g. {', '.join(KNOWN_BACKBONES)}).{hint}"
    )


class Backbone(nn.Module):
    """A timm ResNet or ViT with the selfsup feature contract.

    Args:
        name: ``resnet18``, ``resnet50``, ... or ``vit_tiny``, ``vit_small``,
            ``vit_base`` (or any timm ViT name).
        img_size: input size the ViT is built for (position embeddings are
            interpolated for other sizes at run time). Ignored by ResNets.
        patch_size: ViT patch size (default: the architecture's, 16).
        in_chans: input channels (1 for grayscale medical images).
        cifar_stem: ResNets only: a 3x3 stride-1 first conv and no max-pool,
            for inputs of 64 px or less.
        pool: ViTs only: ``cls`` token or ``avg`` of the patch tokens.
        class_token: ViTs only: whether the ViT has a CLS token (I-JEPA has none).
        drop_path_rate: stochastic depth rate.
        depth, embed_dim, num_heads: ViTs only: override the architecture's blocks,
            width and heads (e.g. a 6-block ViT-Tiny for small data sets).
        channels_last: ResNets only: keep the weights in NHWC memory layout (faster on CPU
            and on GPUs with mixed precision; values and state-dict keys are unchanged).
        zero_init_last: ResNets only: start each residual block's last BatchNorm at scale
            0 (timm's default: every block begins as its shortcut) or, with False, at 1
            (torchvision's default, which solo-learn's and lightly's ResNets start from).
            Only the starting weights differ, not the architecture.
    """

    def __init__(
        self,
        name: str = "resnet18",
        img_size: int = 224,
        patch_size: int | None = None,
        in_chans: int = 3,
        cifar_stem: bool = False,
        pool: Pool = "cls",
        class_token: bool = True,
        drop_path_rate: float = 0.0,
        depth: int | None = None,
        embed_dim: int | None = None,
        num_heads: int | None = None,
        channels_last: bool = True,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        check_backbone_name(name)
        self.name = name
        self.in_chans = in_chans
        self.img_size = img_size
        self.is_vit = is_vit_name(name)
        if self.is_vit:
            if cifar_stem:
                raise ConfigError(
                    "cifar_stem applies to ResNets only; for small ViT inputs use a small patch_size."
                )
            if not zero_init_last:
                raise ConfigError(
                    "zero_init_last applies to ResNets only: drop it from backbone_kwargs."
                )
            if pool == "cls" and not class_token:
                raise ConfigError(
                    "pool='cls' needs a class token: use pool='avg' with class_token=False."
                )
            kwargs: dict[str, Any] = dict(
                img_size=img_size,
                in_chans=in_chans,
                num_classes=0,
                global_pool="token" if pool == "cls" else "avg",
                # One final norm on the tokens for both poolings (timm would move it after
                # the average otherwise), so `pool` can be switched without new weights.
                fc_norm=False,
                class_token=class_token,
                # Any input size whose sides are multiples of the patch size works:
                # timm interpolates the position embeddings on the fly.
                dynamic_img_size=True,
                drop_path_rate=drop_path_rate,
            )
            overrides = {"patch_size": patch_size, "depth": depth, "embed_dim": embed_dim,
                         "num_heads": num_heads}  # fmt: skip
            kwargs.update({k: v for k, v in overrides.items() if v is not None})
            self.timm_name = _VIT_ALIASES.get(name, name)
            self.timm_kwargs = {k: v for k, v in kwargs.items() if k != "drop_path_rate"}
            self.model = timm.create_model(self.timm_name, pretrained=False, **kwargs)
            self.patch_size = self.model.patch_embed.patch_size[0]
            self.pool: Pool = pool
            check_input_size(self, img_size)
        else:
            if depth is not None or embed_dim is not None or num_heads is not None:
                raise ConfigError(
                    "depth, embed_dim and num_heads apply to ViTs only; choose a deeper or "
                    "wider ResNet by name (resnet18, resnet34, resnet50, ...)."
                )
            self.timm_name = name
            self.timm_kwargs = {"in_chans": in_chans, "num_classes": 0}
            self.model = timm.create_model(
                name, pretrained=False, drop_path_rate=drop_path_rate,
                zero_init_last=zero_init_last, **self.timm_kwargs,
            )  # fmt: skip
            if cifar_stem:
                # Why replace modules: timm has no CIFAR-stem option for its ResNets,
                # and a 7x7/2 conv + max-pool leaves a 1x1 map from a 32 px input.
                # bn1 follows the stem in every timm ResNet (plain, deep or tiered stem).
                self.model.conv1 = nn.Conv2d(
                    in_chans, self.model.bn1.num_features, 3, 1, 1, bias=False
                )
                self.model.maxpool = nn.Identity()
            if channels_last:
                # Measured (benchmarks/results/RESULTS.md, "ResNet memory layout"): on CPU, NCHW
                # convolutions slow down on the 2B-view batch of a joint pass; NHWC weights
                # are faster and batch-size neutral. Convolutions follow the weights' layout,
                # so inputs need no conversion; on GPUs it is the layout tensor cores want
                # under mixed precision.
                self.model.to(memory_format=torch.channels_last)
            self.patch_size = None
            self.pool = "avg"
        self.cifar_stem = cifar_stem
        #: Whether ``timm.create_model(timm_name, **timm_kwargs)`` builds this very
        #: architecture (a CIFAR stem is selfsup's own surgery).
        self.timm_buildable = not cifar_stem
        self.embed_dim: int = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> pooled features ``(B, D)``."""
        return self.model(x)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """ViTs: ``(B, C, H, W)`` -> normalised patch tokens ``(B, N, D)`` (no CLS)."""
        tokens = self._vit().forward_features(x)
        return tokens[:, self.model.num_prefix_tokens :]

    # -- patch-level access (MAE, I-JEPA) ------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        """ViTs: tokens before the patches (CLS, registers); 0 without a class token."""
        return self._vit().num_prefix_tokens

    def grid_size(self, size: int | tuple[int, int]) -> tuple[int, int]:
        """ViTs: the patch grid ``(rows, cols)`` of an image of ``size`` px."""
        h, w = (size, size) if isinstance(size, int) else size
        return h // self.patch_size, w // self.patch_size

    def patch_tokens(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ViTs: ``(B, C, H, W)`` -> patch tokens ``(B, L, D)`` in row-major grid order and
        prefix tokens ``(B, P, D)``, each with its position embedding (resampled to the
        image's grid, as timm's forward does). With ``mask`` ``(B, L)`` bool, the masked
        patches' embeddings are replaced by ``mask_token`` ``(D,)`` before the position
        embedding is added (iBOT, DINOv2's ``prepare_tokens_with_masks``)."""
        vit = self._vit()
        tokens = vit.patch_embed(x)  # (B, h, w, D): built with dynamic_img_size
        b, h, w, d = tokens.shape
        tokens = tokens.reshape(b, h * w, d)
        if mask is not None:
            fill = mask_token.to(tokens.dtype).reshape(1, 1, d)
            tokens = torch.where(mask.reshape(b, h * w, 1), fill, tokens)
        n_prefix = vit.num_prefix_tokens
        prefix_list = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        prefix = torch.cat(prefix_list, 1) if prefix_list else tokens.new_zeros(b, 0, d)
        pos = resample_abs_pos_embed(
            vit.pos_embed,
            new_size=(h, w),
            old_size=vit.patch_embed.grid_size,
            num_prefix_tokens=0 if vit.no_embed_class else n_prefix,
        )
        if vit.no_embed_class:
            return tokens + pos, prefix
        return tokens + pos[:, n_prefix:], prefix + pos[:, :n_prefix]

    def encode_patches(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ViTs: encode only the patches ``keep`` ``(B, K)`` (indices into the row-major grid).

        Returns the output tokens ``(B, P + K, D)`` after the final norm, the P prefix
        tokens first, in ``keep``'s order. ``keep=None`` encodes every patch, as timm's
        ``forward_features``. ``mask`` and ``mask_token``: as :meth:`patch_tokens`. Built
        from timm's public modules (patch_embed, blocks, norm) rather than a private ViT
        copy, so any timm ViT works.
        """
        vit = self._vit()
        tokens, prefix = self.patch_tokens(x, mask, mask_token)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        tokens = vit.norm_pre(vit.pos_drop(torch.cat([prefix, tokens], 1)))
        return vit.norm(vit.blocks(tokens))

    def _vit(self) -> nn.Module:
        if not self.is_vit:
            raise TypeError(f"{self.name} is a ResNet: patch-level access needs a ViT backbone.")
        return self.model

    def min_input_size(self) -> int:
        if self.is_vit:
            return self.patch_size
        # ResNets downsample 32x (8x with the CIFAR stem); below that the last map is empty.
        return 8 if self.cifar_stem else 32


def check_input_size(backbone: Backbone, size: int | tuple[int, int]) -> None:
    """Raise a ConfigError naming the fix when ``backbone`` cannot take images of ``size``."""
    h, w = (size, size) if isinstance(size, int) else size
    if min(h, w) < backbone.min_input_size():
        raise ConfigError(
            f"Image size {h}x{w} is too small for {backbone.name} "
            f"(needs at least {backbone.min_input_size()} px"
            + (
                "; set cifar_stem: true in backbone_kwargs for small images)"
                if not backbone.is_vit and not backbone.cifar_stem
                else ")"
            )
        )
    if backbone.is_vit and (h % backbone.patch_size or w % backbone.patch_size):
        raise ConfigError(
            f"Image size {h}x{w} is not a multiple of {backbone.name}'s patch size {backbone.patch_size}: "
            f"crop to a multiple of {backbone.patch_size} or change backbone_kwargs.patch_size."
        )


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a backbone from its name and the kwargs saved in a checkpoint's metadata."""
    return Backbone(name, **kwargs)
