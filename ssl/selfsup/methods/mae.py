"""MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

One view -> patches -> a random 75 % of each image's patches masked (argsort of
noise, per sample) -> the ViT encoder on the visible patches only -> a light
decoder on encoded patches plus mask tokens at the masked positions -> pixel
MSE on the masked patches only (optionally against per-patch normalised
pixels). Evaluation uses the encoder.

Gradient accumulation averages gradients over micro-batches; MAE's loss is
per image, so K x B/K equals one batch of B up to the masks drawn.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models import utils as lightly_utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM
from torch import nn

from selfsup.errors import ConfigError
from selfsup.losses import mae_loss, patch_statistics
from selfsup.masks import random_masking
from selfsup.methods.base import SelfSupervisedMethod


class MAE(SelfSupervisedMethod):
    """MAE on the shared base; the backbone must be a ViT.

    Args:
        mask_ratio: share of patches masked per image (0.75).
        decoder_dim, decoder_depth, decoder_heads: the decoder (512, 8, 16 in the
            paper for ViT-B/L/H; at ViT-Tiny scale a narrow decoder, e.g. 192 x 4,
            keeps the decoder from dominating the compute).
        norm_pix_loss: predict per-patch normalised pixels (the paper's better setting).
        **kwargs: the shared base's arguments; defaults follow the paper's recipe
            (AdamW, betas (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 per 256 images).
    """

    def __init__(
        self,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
        optimizer: str = "adamw",
        base_lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_epochs: float = 40.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            base_lr=base_lr,
            weight_decay=weight_decay,
            betas=betas,
            warmup_epochs=warmup_epochs,
            **kwargs,
        )
        if not self.backbone.is_vit:
            raise ConfigError(
                f"MAE masks image patches, so it needs a ViT backbone, not {self.backbone.name}: "
                "set model.init_args.backbone to vit_tiny, vit_small or vit_base."
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio is {mask_ratio}: use a value in (0, 1), e.g. 0.75.")
        b = self.backbone
        self.grid = b.grid_size(b.img_size)
        self.n_patches = self.grid[0] * self.grid[1]
        self.patch_dim = b.patch_size**2 * b.in_chans
        # The reference's initialisation: fixed 2D sin-cos position embeddings,
        # xavier-uniform linear layers and patch projection, zero biases.
        lightly_utils.initialize_positional_embedding(
            b.model.pos_embed, strategy="sincos", num_prefix_tokens=b.num_prefix_tokens
        )
        for module in b.model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = b.model.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.data.view(proj.shape[0], -1))
        self.decoder_embed = nn.Linear(b.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.n_patches,
            embed_dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_heads,
            num_prefix_tokens=b.num_prefix_tokens,
        )
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_dim)

    def check_view_size(self, size: int) -> None:
        if size != self.backbone.img_size:
            raise ConfigError(
                f"MAE's decoder is built for {self.backbone.img_size} px images but the views are "
                f"{size} px: set backbone_kwargs.img_size: {size} (or the transform's size)."
            )

    def forward_masked(
        self, images: torch.Tensor, keep: torch.Tensor, restore: torch.Tensor
    ) -> torch.Tensor:
        """``images`` ``(B, C, H, W)`` with kept patches ``keep`` -> predicted patches ``(B, L, p*p*C)``."""
        n_prefix = self.backbone.num_prefix_tokens
        latent = self.decoder_embed(self.backbone.encode_patches(images, keep))
        b, n_keep, d = latent.shape[0], keep.shape[1], latent.shape[2]
        mask_tokens = self.decoder.mask_token.expand(b, self.n_patches - n_keep, d)
        patches = torch.cat([latent[:, n_prefix:], mask_tokens.to(latent.dtype)], dim=1)
        patches = torch.gather(patches, 1, restore.unsqueeze(-1).expand(-1, -1, d))
        tokens = self.decoder.add_pos_embed(torch.cat([latent[:, :n_prefix], patches], dim=1))
        return self.decoder_pred(self.decoder.decode(tokens)[:, n_prefix:])

    def mae_step(
        self, images: torch.Tensor, keep: torch.Tensor, restore: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, predicted patches and mask (1 = masked) ``(B, L)`` for given masks."""
        if images.shape[-2:] != tuple(self.backbone.img_size for _ in range(2)):
            self.check_view_size(images.shape[-1])
        pred = self.forward_masked(images, keep, restore)
        mask = torch.ones(images.shape[0], self.n_patches, device=images.device)
        mask.scatter_(1, keep, 0.0)
        target = lightly_utils.patchify(images, self.backbone.patch_size)
        return mae_loss(pred, target, mask, self.hparams.norm_pix_loss), pred, mask

    def training_step(
        self, batch: tuple[list[torch.Tensor], torch.Tensor], batch_idx: int
    ) -> dict[str, Any]:
        (images,), _ = batch
        keep, restore = random_masking(
            images.shape[0], self.n_patches, self.hparams.mask_ratio, images.device
        )
        loss, _, _ = self.mae_step(images, keep, restore)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss}

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``images`` ``(B, C, H, W)`` (normalised as in training) -> ``(masked,
        reconstruction, mask)``: the input with masked patches set to 0, the input
        with masked patches replaced by the decoder's prediction (both ``(B, C, H, W)``),
        and the mask ``(B, L)`` (1 = masked). With ``norm_pix_loss`` the prediction is
        per-patch normalised; it is mapped back with the true patch's mean and std,
        as the paper's visualisations do."""
        keep, restore = random_masking(
            images.shape[0], self.n_patches, self.hparams.mask_ratio, "cpu", generator
        )
        keep, restore = keep.to(images.device), restore.to(images.device)
        _, pred, mask = self.mae_step(images, keep, restore)
        p = self.backbone.patch_size
        target = lightly_utils.patchify(images, p)
        pred = pred.float()
        if self.hparams.norm_pix_loss:
            mean, std = patch_statistics(target)
            pred = pred * std + mean
        m = mask.unsqueeze(-1)
        channels = images.shape[1]
        masked = lightly_utils.unpatchify(target * (1 - m), p, channels)
        reconstruction = lightly_utils.unpatchify(target * (1 - m) + pred * m, p, channels)
        return masked, reconstruction, mask
