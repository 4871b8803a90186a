"""DINO's loss: cross-entropy between the centred, sharpened teacher distribution and the
student distribution over every pair of different views; and the centre.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
Algorithm 1: ``P_t = softmax((t - c) / tau_t)``, ``P_s = softmax(s / tau_s)``, the loss
``sum_{i in globals} sum_{j != i} H(P_t(x_i), P_s(x_j))`` averaged over pairs and
images, and after each batch ``c <- m c + (1 - m) mean(t)`` over the teacher's global
views of the whole (all-process) batch.

Why not lightly's ``DINOLoss`` (which selfsup used before): it has no functional core
(the cross-entropy and the centre update are one ``forward``, so the formula cannot be
evaluated without moving the state, and the method had to redo the teacher softmax for
its collapse statistics); it carries a second, per-epoch teacher-temperature schedule
beside the method's per-step one; and it computes in whatever dtype it is given. The
module here keeps lightly's buffer name and shape (``center``, ``(1, 1, K)``), so
checkpoints written with either hold and load ``criterion.center`` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

Views = torch.Tensor | Sequence[torch.Tensor]


def _stack(views: Views) -> torch.Tensor:
    return views if isinstance(views, torch.Tensor) else torch.stack(list(views))


def teacher_probabilities(
    teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float
) -> torch.Tensor:
    """``softmax((teacher - center) / teacher_temp)`` over the last dimension, in float32.

    Args:
        teacher: teacher logits ``(..., K)``; center: ``(K,)`` or anything that
            broadcasts to it (the module's buffer is ``(1, 1, K)``).
    """
    with torch.autocast(device_type=teacher.device.type, enabled=False):
        centred = teacher.float() - center.float().reshape(-1)
        return torch.softmax(centred / teacher_temp, dim=-1)


def dino_loss(
    teacher: Views,
    student: Views,
    center: torch.Tensor,
    teacher_temp: float,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """DINO's cross-entropy over every (teacher view, other student view) pair.

    Args:
        teacher: teacher logits of the ``T`` global views: ``(T, B, K)`` or ``T`` tensors
            ``(B, K)``. No gradient flows into them (the paper's stop-gradient).
        student: student logits of all ``S`` views, ``(S, B, K)`` or ``S`` tensors
            ``(B, K)``; its first ``T`` views are the teacher's views in the same order,
            and view ``i`` of the teacher is never compared with view ``i`` of the student.
        center: the centre ``c``, ``(K,)`` (or broadcasting to it).
        teacher_temp, student_temp: the temperatures ``tau_t`` (sharpening) and ``tau_s``.

    Returns:
        Scalar: the mean over the ``T x S - T`` pairs and the ``B`` images of
        ``-sum_k P_t[k] log P_s[k]``. Computed in float32 whatever the autocast precision.
    """
    with torch.autocast(device_type=_stack(student).device.type, enabled=False):
        p_t = teacher_probabilities(_stack(teacher).detach(), center, teacher_temp)  # (T, B, K)
    return dino_cross_entropy(p_t, student, student_temp)


def dino_cross_entropy(
    teacher_probs: Views, student: Views, student_temp: float = 0.1
) -> torch.Tensor:
    """:func:`dino_loss` with the teacher's targets given as probabilities ``(T, B, K)``
    (centred and sharpened, or Sinkhorn-Knopp's): the mean over the ``T x S - T`` pairs
    of different views and the ``B`` images of ``-sum_k P_t[k] log P_s[k]``; float32."""
    p_t, s = _stack(teacher_probs).detach(), _stack(student)
    n_t, n_s = p_t.shape[0], s.shape[0]
    if n_t * n_s - min(n_t, n_s) == 0:
        raise ValueError(
            f"DINO's loss compares different views: {n_t} teacher and {n_s} student view(s) "
            "leave no pair."
        )
    with torch.autocast(device_type=s.device.type, enabled=False):
        log_p_s = F.log_softmax(s.float() / student_temp, dim=-1)  # (S, B, K)
        # Cross-entropy of every (teacher view, student view) pair, averaged over images.
        ce = -torch.einsum("tbk,sbk->ts", p_t.float(), log_p_s) / p_t.shape[1]  # (T, S)
        different = ~torch.eye(n_t, n_s, dtype=torch.bool, device=ce.device)
        return ce[different].mean()


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher: Views, momentum: float) -> torch.Tensor:
    """``momentum * center + (1 - momentum) * mean(teacher)``, in float32.

    The mean runs over every row of ``teacher`` (``(T, B, K)``, ``T`` tensors ``(B, K)``
    or ``(N, K)``) and, when a process group exists, over all processes' rows (their sum
    and count in one all-reduce, so processes may hold different numbers of rows, as
    masked patches do), so the centre stays the same on every process and equals one
    process holding every row.
    """
    t = _stack(teacher).float()
    rows = t.reshape(-1, t.shape[-1])
    total = torch.cat([rows.sum(dim=0), rows.new_tensor([len(rows)])])  # (K + 1,)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    if total[-1] == 0:  # no rows anywhere (no masked patch): the centre stays
        return center.float()
    batch_center = total[:-1] / total[-1]
    return center.float() * momentum + batch_center.reshape(center.shape) * (1.0 - momentum)


class DINOLoss(nn.Module):
    """:func:`dino_loss` with its centre: an fp32 buffer ``center`` ``(1, 1, K)`` (in every
    checkpoint) that moves after each call by :func:`updated_center`.

    Args:
        out_dim: the number of prototypes ``K``.
        student_temp: ``tau_s`` (0.1). The teacher temperature follows a schedule, so it
            is given at each call.
        center_momentum: ``m`` of the centre (0.9).
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int = 65536, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, 1, out_dim, dtype=torch.float32))

    def forward(self, teacher: Views, student: Views, teacher_temp: float) -> torch.Tensor:
        """The loss against the current centre; then the centre moves (as the reference)."""
        loss = dino_loss(teacher, student, self.center, teacher_temp, self.student_temp)
        self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: Views) -> None:
        # copy_ keeps the buffer's fp32 whatever the teacher's dtype.
        self.center.copy_(updated_center(self.center, teacher, self.center_momentum))
