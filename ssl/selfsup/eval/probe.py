"""``selfsup probe``: linear classifiers on frozen, cached features.

Features are extracted once (sharded over processes, cached on disk). A grid of
linear heads (learning rates x weight decays) trains together, in one pass over
the features per epoch: SGD with momentum 0.9 and a cosine schedule on
standardised features (train mean and std). The head with the best accuracy on a
validation split carved from the training set (never the test set) is reported
on the test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from selfsup.eval.metrics import classification_metrics

LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4)


def validation_split(
    labels: torch.Tensor, fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) of a per-class random split keeping ``fraction`` of each class
    for validation (at least one image of every class with two or more)."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


class LinearGrid(nn.Module):
    """``H`` linear heads stacked in one weight tensor: ``(N, D)`` -> logits ``(H, N, C)``."""

    def __init__(self, n_heads: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_heads, dim, num_classes) * 0.01)
        self.bias = nn.Parameter(torch.zeros(n_heads, 1, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nd,hdc->hnc", x, self.weight) + self.bias


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
    """Train one linear head per (lr, wd) pair, all on the same shuffled batches.

    SGD with momentum 0.9 (torch's update: ``buf = 0.9 buf + grad + wd w; w -= lr buf``)
    and a per-step cosine schedule, written out here because every head has its own
    learning rate and weight decay on one stacked tensor: one matmul per step for the
    whole grid, where torch's optimisers would need one parameter group, and one small
    matmul, per head. The heads' losses are summed; their gradients are independent.
    """
    torch.manual_seed(seed)
    grid = [{"lr": lr, "weight_decay": wd} for lr in learning_rates for wd in weight_decays]
    heads = LinearGrid(len(grid), train_f.shape[1], num_classes)
    lr = torch.tensor([hp["lr"] for hp in grid]).view(-1, 1, 1)
    wd = torch.tensor([hp["weight_decay"] for hp in grid]).view(-1, 1, 1)
    buffers = [torch.zeros_like(p) for p in heads.parameters()]
    total = epochs * math.ceil(len(train_f) / batch_size)
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(train_f), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = heads(train_f[idx])  # (H, B, C)
            y = train_y[idx].repeat(len(grid))
            # Sum over heads of each head's mean cross-entropy.
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y) * len(grid)
            grads = torch.autograd.grad(loss, list(heads.parameters()))
            scale = 0.5 * (1.0 + math.cos(math.pi * step / total))
            with torch.no_grad():
                for p, grad, buf in zip(heads.parameters(), grads, buffers, strict=True):
                    buf.mul_(0.9).add_(grad + wd * p)
                    p.sub_(lr * scale * buf)
            step += 1
    return heads, grid


@torch.no_grad()
def run_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    class_names: list[str] | None = None,
    val_fraction: float = 0.1,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rates: Sequence[float] = LEARNING_RATES,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    seed: int = 0,
) -> dict[str, Any]:
    """The probe on extracted features: grid on train minus val, pick on val, report test."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    fit_idx, val_idx = validation_split(train_y, val_fraction, seed)
    mean = train_f[fit_idx].mean(0)
    std = train_f[fit_idx].std(0).clamp(min=1e-6)

    def standardise(f: torch.Tensor) -> torch.Tensor:
        return (f - mean) / std

    with torch.enable_grad():
        heads, grid = train_linear_grid(
            standardise(train_f[fit_idx]), train_y[fit_idx], num_classes,
            learning_rates, weight_decays, epochs, batch_size, seed,
        )  # fmt: skip
    val_x, val_y = standardise(train_f[val_idx]), train_y[val_idx]
    val_acc = (heads(val_x).argmax(2) == val_y).float().mean(1).tolist()
    best = max(range(len(grid)), key=lambda i: (val_acc[i], -i))
    metrics = classification_metrics(heads(standardise(test_f))[best], test_y, class_names)
    return {
        "task": "probe",
        **metrics,
        "val_top1": val_acc[best],
        "lr": grid[best]["lr"],
        "weight_decay": grid[best]["weight_decay"],
        "epochs": epochs,
        "n_train": len(fit_idx),
        "n_val": len(val_idx),
        "n_test": len(test_y),
        "grid_val_top1": [round(a, 4) for a in val_acc],
    }
