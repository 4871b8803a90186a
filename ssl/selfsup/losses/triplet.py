"""Self-supervised triplet loss: two views of an image are anchor and positive; the
other images of the global batch are the negatives.

Per anchor a with positive p and a mined negative n (Schroff et al., FaceNet, 2015):
``max(0, d(a, p) - d(a, n) + margin)`` with ``d`` the squared (default) or plain
Euclidean distance between L2-normalised embeddings.

No anchor library has it as a self-supervised method, hence its own module.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from selfsup.distributed import global_views

Mining = Literal["random", "batch_hard", "semi_hard"]


def _distances(a: torch.Tensor, b: torch.Tensor, squared: bool) -> torch.Tensor:
    # For unit vectors ||a - b||^2 = 2 - 2 a.b; clamp before sqrt for a finite gradient at 0.
    d2 = (2.0 - 2.0 * a @ b.T).clamp_min(0.0)
    return d2 if squared else (d2 + 1e-12).sqrt()


def triplet_loss(
    z0: torch.Tensor,
    z1: torch.Tensor,
    margin: float = 0.2,
    mining: Mining = "semi_hard",
    squared: bool = True,
    gather: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Symmetrised triplet loss over the global batch.

    Args:
        z0, z1: embeddings of the two views ``(B, D)``; row i of both is image i.
        margin: the margin m.
        mining: the negative of each anchor among the other images' views:
            ``random``; ``batch_hard`` (the closest); ``semi_hard`` (the closest
            one farther than the positive, else the farthest, as FaceNet/TF do).
        squared: squared Euclidean distance (the lecture-notes form) or plain.
        gather: take negatives from every process (all-gather keeping gradients).

    Returns:
        Scalar: mean over this process's 2B anchors (each view anchors once, the
        other view is its positive). Computed in float32.
    """
    with torch.autocast(device_type=z0.device.type, enabled=False):
        z0, z1 = F.normalize(z0.float(), dim=1), F.normalize(z1.float(), dim=1)
        b = z0.shape[0]
        all0, all1, offset = global_views(z0, z1, gather)
        n = all0.shape[0]
        anchors = torch.cat([z0, z1])  # (2B, D)
        positives = torch.cat([z1, z0])
        candidates = torch.cat([all0, all1])  # (2n, D): every view of the global batch
        d_ap = _distances(anchors, positives, squared).diagonal()  # (2B,)
        d_an = _distances(anchors, candidates, squared)  # (2B, 2n)
        image = torch.arange(b, device=z0.device).repeat(2) + offset
        candidate_image = torch.arange(n, device=z0.device).repeat(2)
        is_negative = image[:, None] != candidate_image[None, :]
        if mining == "random":
            scores = torch.rand(d_an.shape, generator=generator, device=d_an.device)
            idx = scores.masked_fill(~is_negative, -1.0).argmax(dim=1)
        elif mining == "batch_hard":
            idx = d_an.detach().masked_fill(~is_negative, float("inf")).argmin(dim=1)
        else:
            d = d_an.detach()
            outside = is_negative & (d > d_ap.detach()[:, None])
            closest_outside = d.masked_fill(~outside, float("inf")).argmin(dim=1)
            farthest = d.masked_fill(~is_negative, float("-inf")).argmax(dim=1)
            idx = torch.where(outside.any(dim=1), closest_outside, farthest)
        d_neg = d_an.gather(1, idx[:, None]).squeeze(1)
        return F.relu(d_ap - d_neg + margin).mean()
