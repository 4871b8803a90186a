"""BYOL's normalised mean squared error, 2 - 2 cos(p, z).

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Eq. 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``.

    Args:
        p: online predictions ``(B, D)``; z: teacher projections ``(B, D)``
            (the caller stops their gradient). Computed in float32.
    """
    with torch.autocast(device_type=p.device.type, enabled=False):
        cos = F.cosine_similarity(p.float(), z.float(), dim=-1)
        return (2.0 - 2.0 * cos).mean()
