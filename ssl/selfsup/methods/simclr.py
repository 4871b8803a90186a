"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020).

Algorithm 1: two augmented views of each image -> backbone f -> projection
head g -> NT-Xent over the 2N views of the global batch. Evaluation uses f.

Gradient accumulation averages gradients over micro-batches but adds no
negatives: each micro-batch's NT-Xent sees only its own (gathered) batch.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules import SimCLRProjectionHead

from selfsup.losses import nt_xent_loss
from selfsup.methods.base import SelfSupervisedMethod


class SimCLR(SelfSupervisedMethod):
    """SimCLR on the shared base.

    Args:
        projection_hidden_dim: width of the projection MLP's hidden layer.
        projection_dim: output dimension of the projection head (z).
        projection_layers: 2 for SimCLR v1, 3 for v2.
        temperature: NT-Xent temperature (0.5 on CIFAR, 0.1-0.2 at ImageNet scale).
        gather_negatives: take negatives from every process (keep on: a
            per-GPU loss silently shrinks the batch of negatives).
        **kwargs: the shared base's arguments (backbone, optimizer, base_lr, ...).
    """

    collapse_hint = "raise the temperature or lower the learning rate"

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_layers: int = 2,
        temperature: float = 0.5,
        gather_negatives: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.projection_head = SimCLRProjectionHead(
            self.backbone.embed_dim, projection_hidden_dim, projection_dim, projection_layers
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))

    def training_step(
        self, batch: tuple[list[torch.Tensor], torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        (x0, x1), _ = batch
        # One pass over both views: batch-norm statistics span the 2B views, as in SimCLR.
        z0, z1 = self(torch.cat([x0, x1])).chunk(2)
        loss = nt_xent_loss(z0, z1, self.hparams.temperature, gather=self.hparams.gather_negatives)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss, "embeddings": z0.detach()}
