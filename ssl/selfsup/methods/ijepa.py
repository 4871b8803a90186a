"""I-JEPA (Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture", CVPR 2023).

One view -> multi-block masks (one context block minus four target blocks) ->
the context encoder on the context patches -> a narrow predictor, fed with mask
tokens at each target block's positions, predicts the target encoder's
(layer-normed) patch representations there -> smooth-L1 (or L2). The target
encoder is an EMA of the context encoder (linear 0.996 -> 1.0, once per
optimizer step) and sees the whole image. No CLS token anywhere: evaluation
features are the average-pooled patch tokens of the target encoder.

Masks are drawn in the DataLoader workers by the collate function the method asks
for (:meth:`IJEPA.train_collate_fn`, which the run assembly installs), and can be
passed in directly: :meth:`IJEPA.ijepa_loss`.

Gradient accumulation averages gradients over micro-batches; the target encoder
moves once per optimizer step, as without accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from lightly.models.modules import IJEPAPredictorTIMM
from lightly.models.utils import initialize_positional_embedding

from selfsup.errors import ConfigError
from selfsup.losses import ijepa_loss
from selfsup.masks import MultiBlockMaskCollator, MultiBlockMaskSampler
from selfsup.methods.teacher import TeacherStudentMethod


class IJEPA(TeacherStudentMethod):
    """I-JEPA on the shared teacher-student base; the backbone must be a ViT without a
    class token (``backbone_kwargs: {class_token: false, pool: avg}``).

    Args:
        predictor_dim, predictor_depth, predictor_heads: the predictor (384 wide, 6-12
            deep in the paper; narrower than the encoder).
        n_targets, target_scale, target_aspect_ratio, context_scale, min_keep: the
            multi-block masks (:class:`selfsup.masks.MultiBlockMaskSampler`).
        loss: ``smooth_l1`` (the paper) or ``l2``.
        **kwargs: teacher momentum (default linear 0.996 -> 1) and the shared base's arguments.
    """

    eval_backbone = "teacher"

    def __init__(
        self,
        predictor_dim: int = 384,
        predictor_depth: int = 6,
        predictor_heads: int = 12,
        n_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 10,
        loss: Literal["smooth_l1", "l2"] = "smooth_l1",
        teacher_momentum: float = 0.996,
        teacher_momentum_schedule: Literal["cosine", "linear"] = "linear",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            teacher_momentum=teacher_momentum,
            teacher_momentum_schedule=teacher_momentum_schedule,
            **kwargs,
        )
        b = self.backbone
        if not b.is_vit:
            raise ConfigError(
                f"I-JEPA predicts patch embeddings, so it needs a ViT backbone, not {b.name}: "
                "set model.init_args.backbone to vit_tiny, vit_small or vit_base."
            )
        if b.num_prefix_tokens:
            raise ConfigError(
                "I-JEPA needs a ViT without a class token: set backbone_kwargs "
                "class_token: false and pool: avg."
            )
        self.grid = b.grid_size(b.img_size)
        # Fixed 2D sin-cos position embeddings in the encoders, as the reference.
        initialize_positional_embedding(b.model.pos_embed, strategy="sincos", num_prefix_tokens=0)
        self.mask_sampler = MultiBlockMaskSampler(
            self.grid,
            n_targets=n_targets,
            target_scale=tuple(target_scale),
            target_aspect_ratio=tuple(target_aspect_ratio),
            context_scale=tuple(context_scale),
            min_keep=min_keep,
        )
        self.predictor = IJEPAPredictorTIMM(
            num_patches=self.grid[0] * self.grid[1],
            depth=predictor_depth,
            mlp_dim=b.embed_dim,
            predictor_embed_dim=predictor_dim,
            num_heads=predictor_heads,
        )
        self._init_predictor()
        self.teacher_backbone = self.make_teacher(self.backbone)

    @torch.no_grad()
    def _init_predictor(self) -> None:
        # The reference's initialisation (lightly leaves PyTorch's default): truncated
        # normal (std 0.02) linears, zero biases, and each block's output projections
        # scaled down by sqrt(2 x depth index).
        for module in self.predictor.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        for index, block in enumerate(self.predictor.decoder.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * index))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * index))

    def check_view_size(self, size: int) -> None:
        if size != self.backbone.img_size:
            raise ConfigError(
                f"I-JEPA's predictor and masks are built for {self.backbone.img_size} px images but "
                f"the views are {size} px: set backbone_kwargs.img_size: {size}."
            )

    def train_collate_fn(self) -> Callable[[list], Any]:
        """Batches as ``(default_collate(samples), (context, targets))``: the masks are
        drawn in the DataLoader's workers."""
        return MultiBlockMaskCollator(self.mask_sampler)

    def ijepa_loss(
        self, images: torch.Tensor, context: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss for ``images`` ``(B, C, H, W)``, ``context`` ``(B, Nc)`` and ``targets``
        ``(B, M, Nt)`` patch indices; and the context encoder's pooled features ``(B, D)``."""
        target_blocks = list(targets.unbind(1))  # M x (B, Nt)
        with torch.no_grad():
            h = self.teacher_backbone.encode_patches(images)
            h = torch.cat([_gather(h, block) for block in target_blocks])  # (M*B, Nt, D)
        z = self.backbone.encode_patches(images, keep=context)
        pred = self.predictor(z, context, target_blocks)  # (M*B, Nt, D), target-major like h
        loss = ijepa_loss(pred, h, self.hparams.loss)  # layer-normed targets, fp32
        return loss, z.mean(dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        ((images,), _), (context, targets) = _with_masks(batch)
        loss, features = self.ijepa_loss(images, context, targets)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss, "embeddings": features.detach()}


def _with_masks(batch: Any) -> Any:
    """``batch`` if it is ``(collated, (context, targets))``; a ConfigError otherwise."""
    masks = batch[1] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
    if not (
        isinstance(masks, (tuple, list))
        and len(masks) == 2
        and all(isinstance(m, torch.Tensor) for m in masks)
        and masks[1].ndim == 3  # targets (B, M, Nt); a default batch has labels here
    ):
        raise ConfigError(
            "I-JEPA's training batches carry no masks: install the method's collate function "
            "in the training DataLoader (datamodule.collate_fn = model.train_collate_fn(); "
            "`selfsup pretrain` does)."
        )
    return batch


def _gather(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens`` ``(B, L, D)`` at ``index`` ``(B, K)`` -> ``(B, K, D)``."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
