"""Self-supervised triplet learning.

Two augmented views of each image -> backbone f -> projection head g; view 0
and view 1 of an image are anchor and positive, the other images of the global
batch (gathered from every process) the negatives, mined per anchor; loss
``max(0, ||a - p||^2 - ||a - n||^2 + m)`` on normalised embeddings.
Evaluation uses f.

Gradient accumulation averages gradients over micro-batches but adds no
negatives: each micro-batch mines only within its own (gathered) batch.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules import SimCLRProjectionHead

from selfsup.losses import triplet_loss
from selfsup.losses.triplet import Mining
from selfsup.methods.base import SelfSupervisedMethod


class Triplet(SelfSupervisedMethod):
    """Triplet on the shared base.

    Args:
        projection_hidden_dim, projection_dim, projection_layers: the projection MLP.
        margin: triplet margin m on normalised embeddings.
        mining: ``random``, ``batch_hard`` or ``semi_hard`` negatives.
        squared: squared (default) or plain Euclidean distance.
        gather_negatives: mine negatives from every process (keep on).
        **kwargs: the shared base's arguments.
    """

    collapse_hint = (
        "use semi_hard mining (batch_hard is known to collapse early in training, "
        "FaceNet Sec. 3.2) or lower the learning rate"
    )

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_layers: int = 2,
        margin: float = 0.2,
        mining: Mining = "semi_hard",
        squared: bool = True,
        gather_negatives: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.projection_head = SimCLRProjectionHead(
            self.backbone.embed_dim, projection_hidden_dim, projection_dim, projection_layers
        )

    def training_step(
        self, batch: tuple[list[torch.Tensor], torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        (x0, x1), _ = batch
        z0, z1 = self.projection_head(self.backbone(torch.cat([x0, x1]))).chunk(2)
        hp = self.hparams
        loss = triplet_loss(z0, z1, hp.margin, hp.mining, hp.squared, gather=hp.gather_negatives)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss, "embeddings": z0.detach()}
