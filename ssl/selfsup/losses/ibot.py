"""iBOT's masked-image-modelling loss on patch tokens, as DINOv2 weighs it.

Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022, Eq. 2:
``L_MIM = - sum_i m_i P_t(u_i)^T log P_s(u^_i)`` over the masked positions ``m_i = 1``
of the student's masked view ``u^``, with the teacher seeing the unmasked view ``u``.
DINOv2 (Oquab et al., TMLR 2024, Sec. 4, "Patch-level objective"; the reference
``dinov2/loss/ibot_patch_loss.py``, ``forward_masked``) averages the cross-entropy over
each image's masked patches, then over all images of the batch (images without a mask
count as zero), which is what this computes.

Why not lightly's ``IBOTPatchLoss``: it centres and softmaxes the teacher inside the loss,
so Sinkhorn-Knopp targets cannot be given, and its centre moves inside ``forward``. Here
the teacher's targets come in as probabilities (:func:`selfsup.losses.teacher_probabilities`
or :func:`selfsup.losses.sinkhorn_knopp`), as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_patch_loss(
    teacher_probs: torch.Tensor,
    student: torch.Tensor,
    masks: torch.Tensor,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """Mean over images of each image's mean cross-entropy over its masked patches.

    Args:
        teacher_probs: ``(M, K)`` teacher targets of the ``M`` masked patches, in the
            row-major order of ``masks.nonzero()`` (image by image). No gradient flows.
        student: ``(M, K)`` student logits of the same patches.
        masks: ``(B, N)`` or ``(B, H, W)`` bool, True where the student's patch was masked.
        student_temp: ``tau_s`` (0.1).

    Returns:
        Scalar in float32: ``(1 / B) sum_b (1 / |m_b|) sum_{i in m_b} H(t_i, s_i)``.
    """
    flat = masks.flatten(1)
    if teacher_probs.shape != student.shape or len(student) != int(flat.sum()):
        raise ValueError(
            f"iBOT's loss needs one teacher and one student row per masked patch: got "
            f"{tuple(teacher_probs.shape)} and {tuple(student.shape)} for {int(flat.sum())} masked."
        )
    with torch.autocast(device_type=student.device.type, enabled=False):
        ce = -(
            teacher_probs.detach().float() * F.log_softmax(student.float() / student_temp, -1)
        ).sum(-1)
        per_image = flat.sum(1, keepdim=True).clamp(min=1).float()
        weight = (1.0 / per_image).expand_as(flat)[flat]  # each masked patch: 1 / |m_b|
        return (ce * weight).sum() / flat.shape[0]
