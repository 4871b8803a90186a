"""Gram anchoring: hold the student's patch-similarity matrix to a frozen Gram teacher's.

Siméoni et al., "DINOv3", 2025, Sec. 4.2, Eq. 3: ``L_Gram = || X_S X_S^T - X_G X_G^T ||_F^2``
with ``X_S``, ``X_G`` the L2-normalised patch features (``P x d``) of the student and of
the Gram teacher, per image; the reference (``dinov3/loss/gram_loss.py``) takes the
mean squared difference of the two ``P x P`` matrices (the MSE, so the figure does not
grow with the number of patches) over the batch, and can zero negative similarities
first (``remove_neg``; off in DINOv3's configs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_loss(
    student: torch.Tensor, target: torch.Tensor, remove_neg: bool = False
) -> torch.Tensor:
    """Mean over images and patch pairs of ``(<s_i, s_j> - <g_i, g_j>)^2``, normalised features.

    Args:
        student: ``(B, P, D)`` student patch tokens.
        target: ``(B, P, D)`` Gram teacher patch tokens of the same images (no gradient).
        remove_neg: zero negative similarities in both matrices first.
    """
    if student.shape != target.shape or student.ndim != 3:
        raise ValueError(f"Gram anchoring compares (B, P, D) patch tokens: got {tuple(student.shape)} "
                         f"and {tuple(target.shape)}.")  # fmt: skip
    with torch.autocast(device_type=student.device.type, enabled=False):
        s = F.normalize(student.float(), dim=-1)
        g = F.normalize(target.detach().float(), dim=-1)
        s_sim, g_sim = s @ s.transpose(1, 2), g @ g.transpose(1, 2)
        if remove_neg:
            s_sim, g_sim = s_sim.clamp(min=0), g_sim.clamp(min=0)
        return F.mse_loss(s_sim, g_sim)
