"""``selfsup probe``: linear classifiers on frozen features.

Features are extracted once (sharded over processes, cached on disk). A grid of
linear heads (learning rates x weight decays) trains together, in one pass over
the features per epoch: SGD with momentum 0.9 and a cosine schedule on
standardised features (train mean and std). The head with the best accuracy on a
validation split carved from the training set (never the test set) is reported
on the test set. With augmentation (:func:`run_probe_augmented`) the heads see
new random crops and flips through the frozen backbone every epoch instead.

Results carry ``warnings`` (also printed on stderr), ``skipped_images`` and
``n_skipped`` (see :class:`selfsup.eval.features.EvalNotes`): the unreadable images
left out and what the labels make of the figures (a one-class training split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from selfsup.data.module import default_num_workers
from selfsup.distributed import gather_uneven, rank, world_size
from selfsup.eval.features import EvalNotes, notes_of
from selfsup.eval.metrics import classification_metrics, label_warnings

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


class GridSGD:
    """SGD with momentum 0.9 (torch's update: ``buf = 0.9 buf + grad + wd w; w -= lr buf``)
    and a per-step cosine schedule for a :class:`LinearGrid`, one (lr, wd) per head.

    Written out here because every head has its own learning rate and weight decay on
    one stacked tensor: one matmul per step for the whole grid, where torch's optimisers
    would need one parameter group, and one small matmul, per head. The heads' losses
    are summed; their gradients are independent.
    """

    def __init__(self, heads: LinearGrid, grid: list[dict[str, float]], total_steps: int) -> None:
        self.heads, self.grid, self.total, self.done = heads, grid, max(1, total_steps), 0
        self.lr = torch.tensor([hp["lr"] for hp in grid]).view(-1, 1, 1)
        self.wd = torch.tensor([hp["weight_decay"] for hp in grid]).view(-1, 1, 1)
        self.buffers = [torch.zeros_like(p) for p in heads.parameters()]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.enable_grad():
            logits = self.heads(x)  # (H, B, C)
            # Sum over heads of each head's mean cross-entropy.
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), y.repeat(len(self.grid))
            ) * len(self.grid)
            grads = torch.autograd.grad(loss, list(self.heads.parameters()))
        scale = 0.5 * (1.0 + math.cos(math.pi * min(self.done, self.total) / self.total))
        with torch.no_grad():
            for p, grad, buf in zip(self.heads.parameters(), grads, self.buffers, strict=True):
                buf.mul_(0.9).add_(grad + self.wd * p)
                p.sub_(self.lr * scale * buf)
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
    features (see :class:`GridSGD`)."""
    total = epochs * math.ceil(len(train_f) / batch_size)
    sgd = make_grid(train_f.shape[1], num_classes, total, learning_rates, weight_decays, seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train_f), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            sgd.step(train_f[idx], train_y[idx])
    return sgd.heads, sgd.grid


def _notes(
    class_names: list[str] | None,
    notes: EvalNotes | None,
    train_y: torch.Tensor,
    test_y: torch.Tensor,
) -> EvalNotes:
    """The notes of reading the data (given, or carried by ``class_names``) with the
    label warnings added."""
    notes = notes_of(class_names, notes)
    for message in label_warnings(train_y, test_y, class_names):
        notes.warn(message)
    return notes


def _num_classes(class_names: list[str] | None, train_y: torch.Tensor, test_y: torch.Tensor) -> int:
    return max(len(class_names or []), int(max(train_y.max(), test_y.max())) + 1)


def _standardiser(features: torch.Tensor):
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    return lambda f: (f - mean) / std


@torch.no_grad()
def _pick_best(
    heads: LinearGrid,
    grid: list[dict[str, float]],
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    class_names: list[str] | None,
) -> dict[str, Any]:
    """The head best on validation (ties: the earlier one), reported on test."""
    val_acc = (heads(val_x).argmax(2) == val_y).float().mean(1).tolist()
    best = max(range(len(grid)), key=lambda i: (val_acc[i], -i))
    metrics = classification_metrics(heads(test_x)[best], test_y, class_names)
    return {
        "task": "probe",
        **metrics,
        "val_top1": val_acc[best],
        "lr": grid[best]["lr"],
        "weight_decay": grid[best]["weight_decay"],
        "grid_val_top1": [round(a, 4) for a in val_acc],
    }


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
    notes: EvalNotes | None = None,
) -> dict[str, Any]:
    """The probe on extracted features: grid on train minus val, pick on val, report test.

    ``notes``: what reading the data found (default: what ``class_names`` carries, as
    :func:`~selfsup.eval.features.labelled_features` returns them)."""
    notes = _notes(class_names, notes, train_y, test_y)
    num_classes = _num_classes(class_names, train_y, test_y)
    fit_idx, val_idx = validation_split(train_y, val_fraction, seed)
    standardise = _standardiser(train_f[fit_idx])
    heads, grid = train_linear_grid(
        standardise(train_f[fit_idx]), train_y[fit_idx], num_classes,
        learning_rates, weight_decays, epochs, batch_size, seed,
    )  # fmt: skip
    result = _pick_best(heads, grid, standardise(train_f[val_idx]), train_y[val_idx],
                        standardise(test_f), test_y, class_names)  # fmt: skip
    result.update(epochs=epochs, n_train=len(fit_idx), n_val=len(val_idx), n_test=len(test_y),
                  **_names(class_names), **notes.fields())  # fmt: skip
    return result


def _names(class_names: list[str] | None) -> dict[str, Any]:
    return {"classes": list(class_names)} if class_names else {}


class SeededViews(Dataset):
    """``(transform(image), label)`` with the transform's randomness drawn from a seed of
    (seed, epoch, index): every image gets the same augmentation whichever process or
    worker loads it, so the augmented probe does not depend on the number of processes."""

    def __init__(self, dataset: Dataset, transform: Any, seed: int) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.transform(image), label


@torch.no_grad()
def run_probe_augmented(
    backbone: nn.Module,
    train_views: SeededViews,
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
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
    notes: EvalNotes | None = None,
) -> dict[str, Any]:
    """The probe trained on fresh augmented views every epoch (random resized crop and
    flip), each one passed through the frozen backbone in eval mode.

    ``train_f``/``test_f`` are the eval-view features (cached): they give the validation
    split, the standardisation and the test figures. Each global batch is split over the
    processes, embedded, and gathered in batch order, so every process takes the same
    head step on the same features as one process would. ``train_views`` holds every
    training image; where reading left unreadable ones out of ``train_f``, ``notes``
    (default: what ``class_names`` carries) maps its rows to ``train_views``' indices.
    """
    notes = _notes(class_names, notes, train_y, test_y)
    if notes.train_index is None:
        source, aligned = torch.arange(len(train_f)), len(train_f) == len(train_views)
    else:  # rows of train_f -> indices of train_views
        source = notes.train_index
        aligned = len(source) == len(train_f) and int(source.max()) < len(train_views)
    if not aligned:
        raise ValueError(
            f"{len(train_f)} training features for {len(train_views)} training views: pass the "
            "notes (or class names) that labelled_features returned with the features."
        )
    num_classes = _num_classes(class_names, train_y, test_y)
    fit_idx, val_idx = validation_split(train_y, val_fraction, seed)
    standardise = _standardiser(train_f[fit_idx])
    steps = math.ceil(len(fit_idx) / batch_size)
    sgd = make_grid(train_f.shape[1], num_classes, epochs * steps, learning_rates,
                    weight_decays, seed)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    backbone = backbone.eval().to(device)
    workers = default_num_workers() if num_workers is None else num_workers
    for epoch in range(epochs):
        train_views.epoch = epoch
        order = fit_idx[torch.randperm(len(fit_idx), generator=g)]
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        world, positions = world_size(), [torch.arange(len(b)) for b in batches]
        mine = [source[b[rank() :: world]].tolist() for b in batches]  # dataset indices
        loader = iter(DataLoader(train_views, batch_sampler=[m for m in mine if m],
                                 num_workers=workers))  # fmt: skip
        for batch, part, pos in zip(batches, mine, positions, strict=True):
            # A batch smaller than the number of processes leaves some of them nothing.
            local = backbone(next(loader)[0].to(device)).float() if part else train_f[:0]
            # Gathered: rank 0's part (batch[0::W]), rank 1's, ...; put back in batch order.
            feats = gather_uneven(local.to(device)).cpu()
            owner = torch.cat([pos[r::world] for r in range(world)])
            feats = feats[torch.argsort(owner)]
            sgd.step(standardise(feats), train_y[batch])
    result = _pick_best(sgd.heads, sgd.grid, standardise(train_f[val_idx]), train_y[val_idx],
                        standardise(test_f), test_y, class_names)  # fmt: skip
    result.update(epochs=epochs, augment=True, n_train=len(fit_idx), n_val=len(val_idx),
                  n_test=len(test_y), **_names(class_names), **notes.fields())  # fmt: skip
    return result
