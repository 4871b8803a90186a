"""The EMA teacher shared by BYOL, DINO and I-JEPA.

The teacher starts as an exact copy of the student's modules, takes no
gradients, and moves once per optimizer step (so gradient accumulation does not
change how often it moves): ``teacher = m * teacher + (1 - m) * student`` with
``m`` on a schedule from ``teacher_momentum`` to ``teacher_momentum_end``.
It stays in fp32 (parameters are fp32 under ``bf16-mixed``; ``bf16-true`` is
refused: an update of 1 - 0.996 vanishes below bf16's resolution). Every process
applies the same update to the same weights, so teachers stay identical.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from timm.layers import DropPath
from torch import nn

from selfsup.methods.base import SelfSupervisedMethod
from selfsup.schedules import linear, warmup_cosine


class TeacherStudentMethod(SelfSupervisedMethod):
    """Base of the methods with an EMA teacher.

    Args:
        teacher_momentum: EMA momentum at the first step (0.99 on CIFAR, 0.996 at ImageNet scale).
        teacher_momentum_end: momentum at the last step.
        teacher_momentum_schedule: ``cosine`` (BYOL, DINO) or ``linear`` (I-JEPA).
        **kwargs: the shared base's arguments.
    """

    #: Pairs (student, teacher) that the EMA moves; filled by :meth:`make_teacher`.
    _ema_pairs: list[tuple[nn.Module, nn.Module]]

    def __init__(
        self,
        teacher_momentum: float = 0.996,
        teacher_momentum_end: float = 1.0,
        teacher_momentum_schedule: Literal["cosine", "linear"] = "cosine",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._ema_pairs = []
        self._last_ema_step = 0

    def make_teacher(self, student: nn.Module) -> nn.Module:
        """A frozen copy of ``student`` that :meth:`update_teacher` moves."""
        teacher = copy.deepcopy(student)
        teacher.requires_grad_(False)
        # The teacher's targets are deterministic: no stochastic depth (the reference
        # teachers are built with drop-path rate 0). It stays in train mode otherwise,
        # so a ResNet teacher's BatchNorm uses batch statistics, as in BYOL and DINO.
        for module in teacher.modules():
            if isinstance(module, DropPath):
                module.drop_prob = 0.0
        self._ema_pairs.append((student, teacher))
        return teacher

    def teacher_momentum(self, step: int) -> float:
        """Momentum after optimizer step ``step`` (0-based), as BYOL's tau_k for k = 0..K-1."""
        hp = self.hparams
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if hp.teacher_momentum_schedule == "linear":
            return linear(step, total, hp.teacher_momentum, hp.teacher_momentum_end)
        return warmup_cosine(step, total, 0, hp.teacher_momentum, hp.teacher_momentum_end)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for student, teacher in self._ema_pairs:
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.mul_(momentum).add_(ps.detach().to(pt.dtype), alpha=1.0 - momentum)

    def on_train_start(self) -> None:
        self._last_ema_step = self.global_step  # resumed runs continue from their step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # global_step counts optimizer steps: under gradient accumulation the
        # teacher moves once per step, not once per micro-batch.
        if self.global_step > self._last_ema_step:
            momentum = self.teacher_momentum(self.global_step - 1)
            self.update_teacher(momentum)
            self._last_ema_step = self.global_step
            self.log("train/teacher_momentum", momentum)
