"""BYOL (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020).

Algorithm 1: two asymmetric views -> online network (backbone f, projector g,
predictor q) and target network (an EMA of f and g) -> 2 - 2 cos between the
online prediction of one view and the target projection of the other,
symmetrised. Evaluation uses the online backbone.

Gradient accumulation averages gradients over micro-batches; the target moves
once per optimizer step, as without accumulation.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from selfsup.losses import negative_cosine_loss
from selfsup.methods.teacher import TeacherStudentMethod


class BYOL(TeacherStudentMethod):
    """BYOL on the shared teacher-student base.

    Args:
        projection_hidden_dim, projection_dim: projector MLP widths (4096, 256 in the paper).
        prediction_hidden_dim: predictor hidden width.
        **kwargs: teacher momentum and the shared base's arguments.
    """

    eval_backbone = "student"
    collapse_hint = (
        "keep the predictor (it is what prevents collapse), raise the target momentum "
        "(0.99-0.996), or lower the learning rate"
    )

    def __init__(
        self,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.projection_head = BYOLProjectionHead(
            self.backbone.embed_dim, projection_hidden_dim, projection_dim
        )
        self.prediction_head = BYOLPredictionHead(
            projection_dim, prediction_hidden_dim, projection_dim
        )
        self.teacher_backbone = self.make_teacher(self.backbone)
        self.teacher_projection_head = self.make_teacher(self.projection_head)

    def training_step(
        self, batch: tuple[list[torch.Tensor], torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        (x0, x1), _ = batch
        x = torch.cat([x0, x1])
        online = self.projection_head(self.backbone(x))
        p0, p1 = self.prediction_head(online).chunk(2)
        with torch.no_grad():
            z0, z1 = self.teacher_projection_head(self.teacher_backbone(x)).chunk(2)
        loss = negative_cosine_loss(p0, z1) + negative_cosine_loss(p1, z0)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss, "embeddings": online.detach()}
