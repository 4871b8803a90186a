"""The KoLeo regulariser: spread a batch's features by pushing each from its nearest neighbour.

Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019, Sec. 3.1
(the Kozachenko-Leonenko entropy estimator): ``L_KoLeo = -(1/n) sum_i log(d_{n,i})``
with ``d_{n,i} = min_{j != i} ||x_i - x_j||`` on L2-normalised ``x``. DINOv2 (Oquab et
al., TMLR 2024, Sec. 4) applies it to the student's class tokens of each global crop,
within each process's batch, with weight 0.1.

lightly's ``KoLeoLoss`` is this formula (written after DINOv2's); it is used as it
stands, in float32 (the reference turns autocast off; nearest neighbours of bf16
features tie too often).
"""

from __future__ import annotations

import torch
from lightly.loss import KoLeoLoss

_KOLEO = KoLeoLoss()


def koleo_loss(features: torch.Tensor) -> torch.Tensor:
    """``-(1/n) sum_i log(eps + min_{j != i} ||x_i - x_j||)`` on the L2-normalised rows of
    ``features`` ``(n, D)``, ``n >= 2``; float32."""
    if len(features) < 2:
        raise ValueError(
            "KoLeo needs at least two features per batch: each is pushed from its nearest neighbour."
        )
    with torch.autocast(device_type=features.device.type, enabled=False):
        return _KOLEO(features.float())
