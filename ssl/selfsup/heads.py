"""Projection heads that lightly does not provide in the form selfsup needs."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """DINO's head: an MLP to a bottleneck, L2 normalisation, a weight-normed linear layer.

    Same architecture and initialisation as lightly's ``DINOProjectionHead``
    and the reference code, but the last layer uses
    ``torch.nn.utils.parametrizations.weight_norm``: lightly's head uses the old
    ``torch.nn.utils.weight_norm`` hook, which ``copy.deepcopy`` refuses, and the
    EMA teacher is a deep copy of the student.

    Args:
        in_dim: backbone feature size.
        hidden_dim, bottleneck_dim, out_dim: MLP width, bottleneck, number of prototypes K.
        n_layers: MLP layers (3 in DINO).
        batch_norm: BatchNorm in the MLP (off in DINO for ViTs and ResNets alike).
        norm_last_layer: fix the weight norm's magnitude g at 1 (True is more stable;
            ViT-S trains better with False).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        n_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (n_layers - 1)
        for d_in, d_out in itertools.pairwise(dims):
            layers.append(nn.Linear(d_in, d_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.GELU())
        layers.append(nn.Linear(dims[-1], bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1)
        # The prototypes' logits in fp32: they are divided by a teacher temperature of
        # 0.04, which would magnify bf16's rounding (~0.004 near 1) to ~0.1.
        with torch.autocast(x.device.type, enabled=False):
            return self.last_layer(x.float())
