"""A grid of linear heads (learning rates x weight decays) trained together on features.

Single-label: each head is a softmax classifier (cross-entropy). Multi-label: each head
is K independent logistic regressions, one per finding (binary cross-entropy, the
per-finding mean over the batch summed over findings, so finding k's weights get exactly
the gradient of a logistic regression fitted on finding k alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4)


class LinearGrid(nn.Module):
    """``H`` linear heads stacked in one weight tensor: ``(N, D)`` -> logits ``(H, N, C)``."""

    def __init__(self, n_heads: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_heads, dim, num_classes) * 0.01)
        self.bias = nn.Parameter(torch.zeros(n_heads, 1, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nd,hdc->hnc", x, self.weight) + self.bias


def grid_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's loss on a batch: logits ``(H, B, C)``; ``y`` int
    ``(B,)`` (cross-entropy, mean over the batch) or 0/1 ``(B, K)`` (binary cross-entropy,
    mean over the batch, summed over the findings)."""
    heads = logits.shape[0]
    if y.ndim == 2:
        target = y.to(logits.dtype).expand_as(logits)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return bce.mean(1).sum()
    return nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(heads)) * heads


class GridSGD:
    """SGD with momentum 0.9 (torch's update: ``buf = 0.9 buf + grad + wd w; w -= lr buf``)
    and a per-step cosine schedule for a :class:`LinearGrid`, one (lr, wd) per head.

    Written out here because every head has its own learning rate and weight decay on
    one stacked tensor: one matmul per step for the whole grid, where torch's optimisers
    would need one parameter group, and one small matmul, per head. The heads' losses
    are summed; their gradients are independent.
    """

    def __init__(
        self, heads: nn.Module, grid: list[dict[str, float]], total_steps: int, loss=grid_loss
    ) -> None:
        """``heads``: every parameter stacks the heads along its first dimension;
        ``loss(heads(x), y)``: the sum over heads of each head's loss."""
        self.heads, self.grid, self.total, self.done = heads, grid, max(1, total_steps), 0
        self.loss = loss
        self.lr = torch.tensor([hp["lr"] for hp in grid])
        self.wd = torch.tensor([hp["weight_decay"] for hp in grid])
        self.buffers = [torch.zeros_like(p) for p in heads.parameters()]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.enable_grad():
            loss = self.loss(self.heads(x), y)
            grads = torch.autograd.grad(loss, list(self.heads.parameters()))
        scale = 0.5 * (1.0 + math.cos(math.pi * min(self.done, self.total) / self.total))
        with torch.no_grad():
            for p, grad, buf in zip(self.heads.parameters(), grads, self.buffers, strict=True):
                per_head = (-1,) + (1,) * (p.ndim - 1)
                buf.mul_(0.9).add_(grad + self.wd.view(per_head) * p)
                p.sub_(self.lr.view(per_head) * scale * buf)
        self.done += 1


def make_grid(
    dim: int,
    num_classes: int,
    total_steps: int,
    learning_rates: Sequence[float] = LEARNING_RATES,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    seed: int = 0,
) -> GridSGD:
    """One head per (lr, wd) pair, initialised from ``seed``, with its optimiser."""
    torch.manual_seed(seed)
    grid = [{"lr": lr, "weight_decay": wd} for lr in learning_rates for wd in weight_decays]
    return GridSGD(LinearGrid(len(grid), dim, num_classes), grid, total_steps)


def train_linear_grid(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    learning_rates: Sequence[float] = LEARNING_RATES,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[LinearGrid, list[dict[str, float]]]:
    """Train one linear head per (lr, wd) pair, all on the same shuffled batches of
    features (see :class:`GridSGD`); ``num_classes`` is K for multi-label ``train_y``."""
    total = epochs * math.ceil(len(train_f) / batch_size)
    sgd = make_grid(train_f.shape[1], num_classes, total, learning_rates, weight_decays, seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train_f), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            sgd.step(train_f[idx], train_y[idx])
    return sgd.heads, sgd.grid
