"""I-JEPA's loss: smooth-L1 (or L2) between the predictor's outputs and the target
encoder's layer-normed patch representations at the target positions.

Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023, Sec. 3 and the reference code (``F.layer_norm`` over the
feature dimension of the target tokens, without affine parameters, then
``F.smooth_l1_loss`` with beta 1, averaged over every element).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Distance = Literal["smooth_l1", "l2"]


def ijepa_loss(
    pred: torch.Tensor, target: torch.Tensor, distance: Distance = "smooth_l1"
) -> torch.Tensor:
    """Distance between predictions and layer-normed targets.

    Args:
        pred: the predictor's outputs at the target positions ``(N, Nt, D)`` (``N`` =
            target blocks x images).
        target: the target encoder's tokens at the same positions ``(N, Nt, D)``, before
            normalisation; no gradient flows into them (the paper's stop-gradient).
        distance: ``smooth_l1`` (the paper: ``0.5 d^2`` for ``|d| < 1``, else
            ``|d| - 0.5``) or ``l2`` (``d^2``), with ``d = pred - LN(target)``.

    Returns:
        Scalar: the mean over all ``N x Nt x D`` elements. Computed in float32.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.detach().float()
        target = F.layer_norm(target, (target.shape[-1],))
        if distance == "l2":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=1.0)
