"""MAE's reconstruction loss: per-patch mean squared error, averaged over masked patches only.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, Sec. 3
("we compute the loss only on masked patches"), with the reference code's
``norm_pix_loss``: each target patch normalised by its own mean and (unbiased)
variance, ``(x - mean) / sqrt(var + 1e-6)``.
"""

from __future__ import annotations

import torch

#: Added to each patch's variance before the square root (the reference's 1e-6).
PATCH_EPS = 1.0e-6


def patch_statistics(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch's mean and ``sqrt(unbiased variance + 1e-6)``: ``(..., P)`` -> two ``(..., 1)``.

    ``norm_pix_loss`` divides by them; a reconstruction picture multiplies them back.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + PATCH_EPS) ** 0.5
    return mean, std


def mae_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = True
) -> torch.Tensor:
    """Mean squared error per patch, averaged over the masked patches.

    Args:
        pred: the decoder's patches ``(B, L, p*p*C)``.
        target: the image's patches ``(B, L, p*p*C)`` (row-major, pixels then channels).
        mask: ``(B, L)``, 1 = masked (scored), 0 = visible (not scored).
        norm_pix_loss: compare with per-patch normalised target pixels (the paper's
            better setting) instead of the pixels themselves.

    Returns:
        Scalar ``sum_{b,l} mask * mean_P (pred - target)^2 / sum mask``, in float32.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        if norm_pix_loss:
            mean, std = patch_statistics(target)
            target = (target - mean) / std
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
        mask = mask.float()
        return (per_patch * mask).sum() / mask.sum()
