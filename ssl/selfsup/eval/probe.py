"""``selfsup probe``: linear classifiers on frozen features.

Features are extracted once (sharded over processes, cached on disk). A grid of linear
heads (learning rates x weight decays, :mod:`selfsup.eval.linear_grid`) trains together,
in one pass over the features per epoch: SGD with momentum 0.9 and a cosine schedule on
standardised features (train mean and std). Single-label sets get softmax heads picked on
validation top-1; multi-label sets K logistic heads per grid point picked on validation
macro AUROC. The validation split is carved from the training set (never the test set)
by group when the data names groups (patients): no patient on both sides. The picked head
is reported on the test set, with its calibration (expected calibration error).

With ``label_fractions`` the heads train on nested, stratified subsets of the rest of the
training split (:mod:`selfsup.eval.label_curve`); the validation split stays the same for
every fraction, and the standardisation uses every training image's features (no labels).
With augmentation (:func:`run_probe_augmented`) the heads see new random crops and flips
through the frozen backbone every epoch instead.

Results carry ``warnings`` (also printed on stderr), ``skipped_images`` and ``n_skipped``
(see :class:`selfsup.eval.features.EvalNotes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from selfsup.data.module import default_num_workers
from selfsup.distributed import gather_uneven, rank, world_size
from selfsup.errors import ConfigError
from selfsup.eval.features import EvalNotes, groups_of, notes_of
from selfsup.eval.label_curve import label_curve
from selfsup.eval.linear_grid import (
    LEARNING_RATES,
    WEIGHT_DECAYS,
    LinearGrid,
    grid_loss,
    make_grid,
    train_linear_grid,
)
from selfsup.eval.metrics import (
    class_names_for,
    classification_metrics,
    is_multilabel,
    label_warnings,
    multilabel_metrics,
    prevalence,
)
from selfsup.eval.multilabel import calibration_error, multilabel_report
from selfsup.eval.splits import group_split


def _notes(class_names: list[str] | None, notes: EvalNotes | None,
           train_y: torch.Tensor, test_y: torch.Tensor) -> EvalNotes:  # fmt: skip
    """The notes of reading the data (given, or carried by ``class_names``) with the
    label warnings added."""
    notes = notes_of(class_names, notes)
    for message in label_warnings(train_y, test_y, class_names):
        notes.warn(message)
    return notes


def _num_outputs(class_names: list[str] | None, train_y: torch.Tensor, test_y: torch.Tensor) -> int:
    if is_multilabel(train_y):
        return train_y.shape[1]
    return max(len(class_names or []), int(max(train_y.max(), test_y.max())) + 1)


def _standardiser(features: torch.Tensor):
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    return lambda f: (f - mean) / std


def _val_scores(logits: torch.Tensor, val_y: torch.Tensor) -> tuple[str, list[float]]:
    """Each head's validation figure (higher is better): top-1, or macro AUROC for
    multi-label labels (minus the BCE loss where no finding has both classes there)."""
    if not is_multilabel(val_y):
        return "top1", (logits.argmax(2) == val_y).float().mean(1).tolist()
    aurocs = [multilabel_report(head, val_y)["macro_auroc"] for head in logits]
    if all(a is not None for a in aurocs):
        return "macro_auroc", aurocs
    losses = [float(grid_loss(head[None], val_y)) for head in logits]
    return "neg_bce", [-loss for loss in losses]


@torch.no_grad()
def _pick_best(
    heads: LinearGrid,
    grid: list[dict[str, float]],
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    names: list[str],
) -> dict[str, Any]:
    """The head best on validation (ties: the earlier one), reported on test."""
    metric, val = _val_scores(heads(val_x), val_y)
    best = max(range(len(grid)), key=lambda i: (val[i], -i))
    logits = heads(test_x)[best]
    if is_multilabel(test_y):
        probs = logits.sigmoid()
        metrics = multilabel_metrics(probs, test_y, names)
    else:
        probs = logits.softmax(1)
        metrics = classification_metrics(probs, test_y, names)
    return {
        "task": "probe",
        **metrics,
        "calibration_error": calibration_error(probs, test_y),
        f"val_{metric}": val[best],
        "lr": grid[best]["lr"],
        "weight_decay": grid[best]["weight_decay"],
        f"grid_val_{metric}": [round(a, 4) for a in val],
    }


def _split_fields(
    train_y: torch.Tensor, test_y: torch.Tensor, fit_idx: np.ndarray, val_idx: np.ndarray,
    groups: tuple[Any, Any], names: list[str],
) -> dict[str, Any]:  # fmt: skip
    """Sizes, group counts and (multi-label) prevalence of the fit, val and test splits."""
    out: dict[str, Any] = {"n_train": len(fit_idx), "n_val": len(val_idx), "n_test": len(test_y)}
    train_g, test_g = groups
    if train_g is not None:
        out["n_groups"] = {"train": len(set(train_g[fit_idx])), "val": len(set(train_g[val_idx])),
                           "test": len(set(test_g)) if test_g is not None else None}  # fmt: skip
    if is_multilabel(train_y):
        out["prevalence"] = {"train": prevalence(train_y[fit_idx], names),
                             "val": prevalence(train_y[val_idx], names),
                             "test": prevalence(test_y, names)}  # fmt: skip
    return out


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
    groups: tuple[Any, Any] | None = None,
    label_fractions: Sequence[float] | None = None,
    label_seeds: int = 1,
) -> dict[str, Any]:
    """The probe on extracted features: grid on train minus val, pick on val, report test.

    ``train_y``: int ``(N,)`` or multi-label 0/1 ``(N, K)``. ``notes`` and ``groups``
    (train and test group ids, or None): what reading the data found (default: what
    ``class_names`` carries, as :func:`~selfsup.eval.features.labelled_features` returns
    them). ``label_fractions``/``label_seeds``: the label-efficiency curve instead of one
    fit (see the module doc)."""
    notes = _notes(class_names, notes, train_y, test_y)
    groups = groups if groups is not None else groups_of(class_names)
    n_out = _num_outputs(class_names, train_y, test_y)
    names = class_names_for(class_names, n_out)
    fit_idx, val_idx = group_split(train_y.numpy(), groups[0], val_fraction, seed)
    standardise = _standardiser(train_f[fit_idx])
    val_x, test_x = standardise(train_f[val_idx]), standardise(test_f)

    def fit(idx: np.ndarray, s: int) -> dict[str, Any]:
        heads, grid = train_linear_grid(
            standardise(train_f[idx]), train_y[idx], n_out, learning_rates, weight_decays,
            epochs, batch_size, s,
        )  # fmt: skip
        return _pick_best(heads, grid, val_x, train_y[val_idx], test_x, test_y, names)

    result = {"epochs": epochs, **_split_fields(train_y, test_y, fit_idx, val_idx, groups, names)}
    if label_fractions is None:
        result = {**fit(fit_idx, seed), **result}
    else:
        fit_groups = groups[0][fit_idx] if groups[0] is not None else None
        curve = label_curve(train_y[fit_idx].numpy(), fit_groups, label_fractions, label_seeds,
                            seed, lambda sub, s: fit(fit_idx[sub], s))  # fmt: skip
        result = {"task": "probe", **curve, **result}
    result.update(**_class_fields(class_names), **notes.fields())
    return result


def _class_fields(class_names: list[str] | None) -> dict[str, Any]:
    return {"classes": list(class_names)} if class_names else {}


class SeededViews(Dataset):
    """``(transform(image), label)`` with the transform's randomness drawn from a seed of
    (seed, epoch, index): every image gets the same augmentation whichever process or
    worker loads it, so the augmented probe does not depend on the number of processes."""

    def __init__(self, dataset: Dataset, transform: Any, seed: int) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
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
    groups: tuple[Any, Any] | None = None,
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
    groups = groups if groups is not None else groups_of(class_names)
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
    n_out = _num_outputs(class_names, train_y, test_y)
    names = class_names_for(class_names, n_out)
    fit, val_idx = group_split(train_y.numpy(), groups[0], val_fraction, seed)
    fit_idx = torch.from_numpy(fit)
    standardise = _standardiser(train_f[fit_idx])
    steps = math.ceil(len(fit_idx) / batch_size)
    sgd = make_grid(train_f.shape[1], n_out, epochs * steps, learning_rates, weight_decays, seed)
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
                        standardise(test_f), test_y, names)  # fmt: skip
    result.update(epochs=epochs, augment=True,
                  **_split_fields(train_y, test_y, fit, val_idx, groups, names),
                  **_class_fields(class_names), **notes.fields())  # fmt: skip
    return result


def check_probe_options(val_fraction: float, augment: bool, label_fractions: Any) -> None:
    """One line for options that cannot work together, before any feature is extracted."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val_fraction {val_fraction}: give a fraction in (0, 1), e.g. 0.1.")
    if augment and label_fractions:
        raise ConfigError(
            "--label_fraction trains many probes on cached features; --augment passes every "
            "image through the backbone each epoch: drop one of them."
        )
