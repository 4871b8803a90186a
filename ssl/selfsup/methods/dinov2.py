"""DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision",
TMLR 2024), with DINOv3's Gram anchoring (Siméoni et al., 2025) as an option.

Per batch (``dinov2/train/ssl_meta_arch.py``, ``forward_backward``):

1. multi-crop views (2 global + K local, as DINO); block-wise masks on half of the
   student's global crops, ratios spread over (0.1, 0.5) (:mod:`selfsup.block_masks`,
   drawn in the DataLoader's workers);
2. the teacher (an EMA of the student) sees the *unmasked* global crops: its class
   tokens go through the DINO head, its patch tokens at the masked positions through
   the iBOT head (the same head, or a separate one); the targets are the centred,
   sharpened softmax (DINO's centring, one centre per head) or Sinkhorn-Knopp's
   assignments, all-reduced over processes;
3. the student sees the masked global crops (a learnt mask token in place of each
   masked patch) and the local crops;
4. loss = DINO's cross-entropy on the class tokens (every teacher global crop against
   every other student crop) + iBOT's cross-entropy on the masked patches + 0.1 x
   KoLeo on each global crop's student class tokens [+ w x Gram: the student's patch
   similarities held to those of a frozen Gram teacher: the starting weights,
   refreshed from the EMA teacher every ``gram_update_every`` steps if asked];
5. gradients clipped to norm 3 per module (backbone, each head), the heads' last
   layers frozen for the first epoch; then the teacher moves.

Register tokens, LayerScale and drop path are timm's: a ``vit_*_reg*_dinov2``
backbone has DINOv2's layout, so DINOv2-family weights load with ``init_from``.
Evaluation uses the teacher backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from selfsup.block_masks import BlockMaskCollator, check_mask_options
from selfsup.errors import ConfigError
from selfsup.heads import DINOHead
from selfsup.losses import (
    DINOLoss,
    dino_cross_entropy,
    gram_loss,
    ibot_patch_loss,
    koleo_loss,
    sinkhorn_knopp,
    teacher_probabilities,
)
from selfsup.methods.dino import DINO
from selfsup.methods.teacher import TeacherStudentMethod, frozen_copy

Centering = Literal["centering", "sinkhorn_knopp"]


class DINOv2(DINO):
    """DINOv2 on the DINO method: a ViT with a class token (registers allowed).

    Args:
        ibot_weight: weight of iBOT's masked-patch loss (1.0; 0 switches it off).
        koleo_weight: weight of KoLeo on the student's global class tokens (0.1).
        centering: the teacher's targets: ``centering`` (DINO's softmax with a centre)
            or ``sinkhorn_knopp`` (DINOv2's large-model recipe).
        sinkhorn_iterations: Sinkhorn-Knopp rounds (3).
        separate_ibot_head: a second head for the patches (DINOv2's ViT-L/g configs) or
            DINO's head for both (its default config).
        ibot_out_dim: prototypes of a separate iBOT head (default: ``out_dim``).
        mask_ratio: range of the masked share of a masked global crop ((0.1, 0.5)).
        mask_probability: share of the global crops that are masked (0.5).
        gram_weight: DINOv3's Gram anchoring weight (0: off; DINOv3 uses 1.0-2.0).
        gram_update_every: optimizer steps between refreshes of the Gram teacher from the
            EMA teacher (0: never; it stays the starting weights, ``init_from``'s).
        gram_remove_neg: zero negative patch similarities before comparing them.
        clip_grad: gradient norm bound per module (3.0); None switches it off.
        **kwargs: DINO's arguments (head, temperatures, centre momentum, freezing of the
            last layer, teacher momentum) and the shared base's.
    """

    collapse_hint = (
        "check the centring (center_momentum 0.9, or centering sinkhorn_knopp) and the teacher "
        "temperature (<= 0.07), or lower the learning rate"
    )

    def __init__(
        self,
        ibot_weight: float = 1.0,
        koleo_weight: float = 0.1,
        centering: Centering = "centering",
        sinkhorn_iterations: int = 3,
        separate_ibot_head: bool = False,
        ibot_out_dim: int | None = None,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
        gram_weight: float = 0.0,
        gram_update_every: int = 0,
        gram_remove_neg: bool = False,
        clip_grad: float | None = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(clip_grad=clip_grad, **kwargs)
        hp = self.hparams
        b = self.backbone
        if not b.is_vit or b.num_prefix_tokens == 0:
            raise ConfigError(
                f"DINOv2 trains a ViT's class and patch tokens, so it needs a ViT with a class "
                f"token, not {b.name} {'without one' if b.is_vit else ''}: set "
                "model.init_args.backbone to vit_small or vit_small_patch14_reg4_dinov2."
            )
        if centering not in ("centering", "sinkhorn_knopp"):
            raise ConfigError(f"centering={centering!r}: use centering or sinkhorn_knopp.")
        if min(ibot_weight, koleo_weight, gram_weight) < 0 or gram_update_every < 0:
            raise ConfigError(
                "ibot_weight, koleo_weight, gram_weight and gram_update_every must be 0 or more."
            )
        check_mask_options(tuple(mask_ratio), mask_probability)
        self.mask_token = nn.Parameter(torch.zeros(b.embed_dim))  # DINOv2: zeros
        patch_dim = ibot_out_dim or hp.out_dim
        if separate_ibot_head:
            self.ibot_head = DINOHead(b.embed_dim, hp.projection_hidden_dim, hp.bottleneck_dim,
                                      patch_dim, hp.head_layers, hp.head_batch_norm,
                                      hp.norm_last_layer)  # fmt: skip
            self.teacher_ibot_head = self.make_teacher(self.ibot_head)
        elif ibot_out_dim not in (None, hp.out_dim):
            raise ConfigError(
                "ibot_out_dim applies to a separate iBOT head: set separate_ibot_head: true."
            )
        # The patch tokens' own centre (as the reference's iBOT loss keeps one).
        self.patch_criterion = DINOLoss(patch_dim, hp.student_temp, hp.center_momentum)
        self.gram_teacher = frozen_copy(b) if gram_weight > 0 else None

    def _heads(self, teacher: bool) -> tuple[nn.Module, nn.Module]:
        """(DINO head, iBOT head) of the student or the teacher."""
        if teacher:
            return self.teacher_head, getattr(self, "teacher_ibot_head", self.teacher_head)
        return self.head, getattr(self, "ibot_head", self.head)

    @torch.no_grad()
    def after_init_weights(self) -> None:
        super().after_init_weights()
        if self.gram_teacher is not None:  # the anchor: the starting weights
            self.gram_teacher.load_state_dict(self.backbone.state_dict())

    def train_collate_fn(self) -> Callable[[list], Any]:
        hp, view = self.hparams, self.data_view
        grid = self.backbone.grid_size(view.size) if view is not None else None
        return BlockMaskCollator(
            self.backbone.patch_size, tuple(hp.mask_ratio), hp.mask_probability, grid
        )

    # -- the teacher's targets ---------------------------------------------------------
    def _targets(
        self, logits: torch.Tensor, criterion: DINOLoss, teacher_temp: float
    ) -> torch.Tensor:
        """Centred softmax (then the centre moves) or Sinkhorn-Knopp, all-reduced."""
        if self.hparams.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(logits, teacher_temp, self.hparams.sinkhorn_iterations)
        probs = teacher_probabilities(logits, criterion.center, teacher_temp)
        criterion.update_center(logits)
        return probs

    @torch.no_grad()
    def teacher_targets(
        self, global_crops: torch.Tensor, masks: torch.Tensor, teacher_temp: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher targets for the ``2B`` unmasked global crops: class tokens ``(2, B, K)``
        and masked patches ``(M, K')`` (row-major over ``masks``); and the teacher's
        class-token probabilities with the *current* centre, for the collapse statistics."""
        tokens = self.teacher_backbone.encode_patches(global_crops)
        n_prefix = self.backbone.num_prefix_tokens
        dino_head, ibot_head = self._heads(teacher=True)
        cls_logits = dino_head(tokens[:, 0])
        patch_logits = ibot_head(tokens[:, n_prefix:][masks])
        cls_probs = self._targets(cls_logits, self.criterion, teacher_temp)
        patch_probs = self._targets(patch_logits, self.patch_criterion, teacher_temp)
        return cls_probs.reshape(2, -1, cls_probs.shape[-1]), patch_probs, cls_probs

    # -- the loss ----------------------------------------------------------------------
    def dinov2_loss(
        self, views: list[torch.Tensor], masks: torch.Tensor, teacher_temp: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Total loss for ``views = [global_1, global_2, local_1, ...]`` and ``masks``
        ``(2B, N)`` on the global crops; the terms and collapse statistics; the student's
        global class tokens. Moves the centres (with ``centering``)."""
        hp = self.hparams
        global_crops = torch.cat(views[:2])
        t_cls, t_patch, t_probs = self.teacher_targets(global_crops, masks, teacher_temp)

        n_prefix = self.backbone.num_prefix_tokens
        tokens = self.backbone.encode_patches(global_crops, mask=masks, mask_token=self.mask_token)
        cls = [tokens[:, 0]]
        if len(views) > 2:
            cls.append(self.backbone.encode_patches(torch.cat(views[2:]))[:, 0])
        masked_patches = tokens[:, n_prefix:][masks]
        dino_head, ibot_head = self._heads(teacher=False)
        if ibot_head is dino_head:  # one pass through the shared head
            out = dino_head(torch.cat([*cls, masked_patches]))
            s_cls, s_patch = (
                out[: -len(masked_patches) or None],
                out[len(out) - len(masked_patches) :],
            )
        else:
            s_cls, s_patch = dino_head(torch.cat(cls)), ibot_head(masked_patches)

        terms = {"dino_loss": dino_cross_entropy(t_cls, s_cls.chunk(len(views)), hp.student_temp)}
        loss = terms["dino_loss"]
        if hp.ibot_weight > 0:
            terms["ibot_loss"] = ibot_patch_loss(t_patch, s_patch, masks, hp.student_temp)
            loss = loss + hp.ibot_weight * terms["ibot_loss"]
        if hp.koleo_weight > 0:  # within each global crop, never across an image's crops
            terms["koleo_loss"] = sum(koleo_loss(c) for c in cls[0].chunk(2))
            loss = loss + hp.koleo_weight * terms["koleo_loss"]
        if self.gram_teacher is not None:
            with torch.no_grad():
                anchor = self.gram_teacher.encode_patches(global_crops)[:, n_prefix:]
            terms["gram_loss"] = gram_loss(tokens[:, n_prefix:], anchor, hp.gram_remove_neg)
            loss = loss + hp.gram_weight * terms["gram_loss"]

        with torch.no_grad():
            entropy = -(t_probs * torch.log(t_probs.clamp_min(1e-12))).sum(-1).mean()
        stats = {
            "teacher_entropy": entropy,
            "student_teacher_kl": terms["dino_loss"].detach() - entropy,
        }
        return loss, {**terms, **stats}, cls[0]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        (views, _), masks = _with_masks(batch)
        temp = self.teacher_temperature()
        loss, terms, features = self.dinov2_loss(views, masks, temp)
        self.log("train/loss", loss, prog_bar=True)
        for name in ("dino_loss", "ibot_loss", "koleo_loss", "gram_loss"):
            if name in terms:
                self.log(f"train/{name}", terms[name])
        self.log("train/teacher_temp", temp)
        stats = {k: terms[k] for k in ("teacher_entropy", "student_teacher_kl")}
        return {"loss": loss, "embeddings": features.detach(), "collapse_stats": stats}

    # -- optimisation ------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # The shared base's rules (frozen backbone, weight-decay schedule), then DINOv2's
        # clipping: one norm per module (the reference's clip_grad_norm_ per student
        # module), not DINO's per-parameter norm.
        TeacherStudentMethod.on_before_optimizer_step(self, optimizer)
        clip = self.hparams.clip_grad
        heads = {self.head, *self._heads(teacher=False)}
        if clip is not None:
            for module in (self.backbone, *heads):
                nn.utils.clip_grad_norm_(
                    [p for p in module.parameters() if p.grad is not None], clip
                )
        if self.current_epoch < self.hparams.freeze_last_layer_epochs:
            for head in heads:
                for p in head.last_layer.parameters():
                    p.grad = None

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        every = self.hparams.gram_update_every
        if self.gram_teacher is not None and every and self.global_step % every == 0:
            with torch.no_grad():  # DINOv3's rep_update: the anchor becomes the EMA teacher
                self.gram_teacher.load_state_dict(self.teacher_backbone.state_dict())


def _with_masks(batch: Any) -> Any:
    """``batch`` if it is ``(collated, masks (2B, N) bool)``; a ConfigError otherwise."""
    masks = batch[1] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
    if not (isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.ndim == 2):
        raise ConfigError(
            "DINOv2's training batches carry no patch masks: install the method's collate function "
            "in the training DataLoader (datamodule.collate_fn = model.train_collate_fn(); "
            "`selfsup pretrain` does)."
        )
    return batch
