"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, Algorithm 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.distributed import global_views


def nt_xent_loss(
    z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.5, gather: bool = True
) -> torch.Tensor:
    """NT-Xent over the global batch.

    Args:
        z0, z1: projections of the two views, ``(B, D)``; row ``i`` of both comes
            from the same image.
        temperature: softmax temperature tau.
        gather: take negatives from every process (an all-gather that keeps
            gradients) whenever a process group exists. With N processes the loss
            and gradients equal one process holding the N*B batch.

    Returns:
        Scalar: the mean over this process's 2B anchors of
        ``-log(exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau))`` where ``s`` is
        cosine similarity and the sum runs over the 2NB - 1 other views.

    Computed in float32 whatever the autocast precision.
    """
    with torch.autocast(device_type=z0.device.type, enabled=False):
        z0 = F.normalize(z0.float(), dim=1)
        z1 = F.normalize(z1.float(), dim=1)
        b = z0.shape[0]
        all0, all1, offset = global_views(z0, z1, gather)
        n = all0.shape[0]
        # Anchors: this process's 2B views. Candidates: all 2N views of the global batch,
        # laid out [all0; all1]; the positive of z0[i] is all1[offset + i] and vice versa.
        anchors = torch.cat([z0, z1], dim=0)  # (2B, D)
        candidates = torch.cat([all0, all1], dim=0)  # (2n, D)
        logits = anchors @ candidates.T / temperature  # (2B, 2n)
        idx = torch.arange(b, device=z0.device) + offset
        self_idx = torch.cat([idx, idx + n])
        positive_idx = torch.cat([idx + n, idx])
        is_self = F.one_hot(self_idx, 2 * n).bool()
        logits = logits.masked_fill(is_self, float("-inf"))  # a view is never its own negative
        return F.cross_entropy(logits, positive_idx)


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent_loss`."""

    def __init__(self, temperature: float = 0.5, gather: bool = True) -> None:
        super().__init__()
        self.temperature = temperature
        self.gather = gather

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(z0, z1, self.temperature, self.gather)
