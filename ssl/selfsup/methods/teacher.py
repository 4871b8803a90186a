"""The EMA teacher shared by BYOL, DINO and I-JEPA.

The teacher starts as an exact copy of the student's modules, takes no
gradients, and moves right after each optimizer step (so gradient accumulation
does not change how often it moves): ``teacher_k = m_k * teacher_{k-1} + (1 - m_k)
* student_k``, with ``student_k`` the student after step ``k`` and ``m_k`` on a
schedule from ``teacher_momentum`` to ``teacher_momentum_end``.
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


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that takes no gradients and has no stochastic depth: a
    teacher's targets are deterministic (the reference teachers are built with drop-path
    rate 0). It stays in train mode otherwise, so a ResNet teacher's BatchNorm uses batch
    statistics, as in BYOL and DINO."""
    copied = copy.deepcopy(module).requires_grad_(False)
    for m in copied.modules():
        if isinstance(m, DropPath):
            m.drop_prob = 0.0
    return copied


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

    def make_teacher(self, student: nn.Module) -> nn.Module:
        """A frozen copy of ``student`` that :meth:`update_teacher` moves."""
        teacher = frozen_copy(student)
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
    def after_init_weights(self) -> None:
        """The backbone's teacher starts as an exact copy of its starting weights."""
        for student, teacher in self._ema_pairs:
            if student is self.backbone:
                teacher.load_state_dict(student.state_dict())

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for student, teacher in self._ema_pairs:
            if student is self.backbone and self.backbone_frozen:
                continue  # a frozen student: the teacher keeps the very same weights
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.mul_(momentum).add_(ps.detach().to(pt.dtype), alpha=1.0 - momentum)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        step = self.global_step  # optimizer steps taken before this one
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Right after the student moved, and only then: under gradient accumulation the
        # teacher moves once per optimizer step, not per micro-batch; and before any
        # callback's batch-end hook, so a checkpoint written there (stop signals,
        # every-N-steps saves) holds the teacher of its global_step, and a run resumed
        # from it misses no update.
        momentum = self.teacher_momentum(step)
        self.update_teacher(momentum)
        self.log("train/teacher_momentum", momentum)
