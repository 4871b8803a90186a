"""DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021).

Algorithm 1: multi-crop views (2 global + K local) -> student (backbone + DINO
head) on every view, teacher (an EMA of the student) on the global views ->
cross-entropy between the centred, sharpened teacher distribution of one global
view and the student distribution of every other view -> the centre follows
the teacher's batch mean (momentum 0.9, averaged over all processes).
The student's last layer stays frozen during the first epoch; each parameter's
gradient is clipped to norm 3.0. Evaluation uses the teacher backbone.

Gradient accumulation averages the student's gradients over micro-batches; the
teacher moves once per optimizer step, the centre once per micro-batch (as the
reference, which never accumulates, moves it once per batch).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from selfsup.heads import DINOHead
from selfsup.losses import DINOLoss, teacher_probabilities
from selfsup.methods.teacher import TeacherStudentMethod
from selfsup.schedules import linear


class DINO(TeacherStudentMethod):
    """DINO on the shared teacher-student base.

    Args:
        projection_hidden_dim, bottleneck_dim, out_dim, head_layers, head_batch_norm,
            norm_last_layer: the DINO head (:class:`selfsup.heads.DINOHead`).
        teacher_temp: teacher temperature after the warm-up (0.04; 0.07 for long ViT runs).
        warmup_teacher_temp: teacher temperature at step 0.
        warmup_teacher_temp_epochs: linear warm-up length (the paper: 30 epochs).
        student_temp: student temperature (0.1).
        center_momentum: momentum of the teacher centre (0.9).
        freeze_last_layer_epochs: epochs during which the head's last layer gets no update.
        clip_grad: per-parameter gradient norm bound (3.0); None switches it off.
        **kwargs: teacher momentum and the shared base's arguments.
    """

    eval_backbone = "teacher"
    collapse_hint = (
        "check the centring (center_momentum 0.9) and the teacher temperature (<= 0.07; "
        "a warmer teacher collapses to the uniform output), or lower the learning rate"
    )

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        head_layers: int = 3,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 0.0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        freeze_last_layer_epochs: int = 1,
        clip_grad: float | None = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.head = DINOHead(
            self.backbone.embed_dim,
            projection_hidden_dim,
            bottleneck_dim,
            out_dim,
            head_layers,
            head_batch_norm,
            norm_last_layer,
        )
        self.teacher_backbone = self.make_teacher(self.backbone)
        self.teacher_head = self.make_teacher(self.head)
        # The centre is an fp32 buffer (in every checkpoint as criterion.center), its
        # batch mean all-reduced over processes.
        self.criterion = DINOLoss(out_dim, student_temp, center_momentum)

    def teacher_temperature(self) -> float:
        hp = self.hparams
        warmup_steps = round(hp.warmup_teacher_temp_epochs * self.steps_per_epoch)
        return linear(self.global_step, warmup_steps, hp.warmup_teacher_temp, hp.teacher_temp)

    def student_outputs(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Head outputs for every view, one backbone pass per crop size (global, local);
        and the backbone features of the global views."""
        n_global = 2
        feats = [self.backbone(torch.cat(views[:n_global]))]
        if len(views) > n_global:
            feats.append(self.backbone(torch.cat(views[n_global:])))
        return list(self.head(torch.cat(feats)).chunk(len(views))), feats[0]

    def dino_loss(
        self, views: list[torch.Tensor], teacher_temp: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Loss on ``views = [global_1, global_2, local_1, ...]``, collapse statistics,
        and the student's global features. Updates the centre."""
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:2]))).chunk(2)
        student, features = self.student_outputs(views)
        with torch.no_grad():  # before the centre moves
            probs = teacher_probabilities(torch.cat(teacher), self.criterion.center, teacher_temp)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
        loss = self.criterion(teacher, student, teacher_temp)  # fp32; moves the centre
        # The loss is the mean cross-entropy H(t) + KL(t || s) over its pairs, and every
        # teacher view appears in equally many pairs, so KL = loss - mean H(t).
        stats = {"teacher_entropy": entropy, "student_teacher_kl": loss.detach() - entropy}
        return loss, stats, features

    def training_step(
        self, batch: tuple[list[torch.Tensor], torch.Tensor], batch_idx: int
    ) -> dict[str, Any]:
        views, _ = batch
        temp = self.teacher_temperature()
        loss, stats, features = self.dino_loss(views, temp)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/teacher_temp", temp)
        return {"loss": loss, "embeddings": features.detach(), "collapse_stats": stats}

    def collapse_symptom(self, stats: dict[str, float]) -> str | None:
        # DINO, Fig. 7: in both collapse modes the student matches the teacher
        # (KL -> 0); uniform collapse puts the teacher's entropy at ln K,
        # one-dimension collapse near 0. Uniform: above 90 % of ln K with KL at most
        # 1e-3, or within 1 % of ln K with KL under 0.01 nats, where a short DINO recipe
        # on PneumoniaMNIST settled (99.9-99.97 % of ln 4096, KL 0.002-0.007 from step
        # ~120 on; benchmarks/results/RESULTS.md) while its kNN stopped improving.
        kl = stats.get("student_teacher_kl", 1.0)
        h, h_max = stats["teacher_entropy"], math.log(self.hparams.out_dim)
        if (h > 0.9 * h_max and kl <= 1e-3) or (h > 0.99 * h_max and kl < 1e-2):
            return (f"the teacher's output is uniform (entropy {h:.3f} of ln K = {h_max:.3f}, "
                    f"KL {kl:.4f}) and the student copies it.")  # fmt: skip
        if h < 0.05 * h_max and kl <= 1e-3:
            return f"the teacher puts all mass on one prototype (entropy {h:.3f}) and the student copies it."
        return None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        clip = self.hparams.clip_grad
        if clip is not None:
            # Per parameter, as the reference's clip_gradients (not one global norm).
            for p in self.parameters():
                if p.grad is not None:
                    norm = p.grad.detach().norm()
                    p.grad.mul_((clip / (norm + 1e-6)).clamp(max=1.0))
        if self.current_epoch < self.hparams.freeze_last_layer_epochs:
            for p in self.head.last_layer.parameters():
                p.grad = None
