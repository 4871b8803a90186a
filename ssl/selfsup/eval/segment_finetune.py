"""``selfsup segment --finetune true``: the backbone and a linear segmentation head trained
together, the fine-tuning half of a frozen-versus-fine-tuned comparison.

The network is the frozen evaluation's (:mod:`selfsup.eval.segment`): the backbone's
dense features (:class:`~selfsup.eval.dense_features.DenseFeatures`), BatchNorm and a 1x1
convolution, logits upsampled bilinearly to the mask. Training views are random resized
crops of image and mask together (:class:`~selfsup.data.mask_views.MaskViews`, no flip:
left and right structures); AdamW with layer-wise learning-rate decay for ViTs (BEiT/MAE:
:func:`~selfsup.optimizers.layer_decay_groups`), linear warm-up then cosine per step.
After every epoch the validation split (carved by patient) is segmented at each mask's
own size; the epoch with the best mean foreground Dice is the one reported on the test
split, never the last by default.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from selfsup.data.mask_views import MaskViews
from selfsup.eval.dense_features import DenseFeatures, DenseTransform
from selfsup.eval.segment import SegmentationLoss, mean_foreground_dice, split_and_fit, upsampled
from selfsup.eval.segmentation_metrics import image_figures, summarise
from selfsup.optimizers import decay_groups, layer_decay_groups
from selfsup.schedules import warmup_cosine


class Segmenter(nn.Module):
    """Backbone features + BatchNorm + 1x1 convolution: ``(B, C, H, W)`` -> ``(B, K, h, w)``."""

    def __init__(self, features: DenseFeatures, n_classes: int) -> None:
        super().__init__()
        self.features = features
        self.norm = nn.BatchNorm2d(features.embed_dim)
        self.classify = nn.Conv2d(features.embed_dim, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.norm(self.features(x)))


class _Pairs(Dataset):
    def __init__(self, data: Any, indices: np.ndarray, views: MaskViews) -> None:
        self.data, self.indices, self.views = data, indices, views

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.data[int(self.indices[i])]
        return self.views(image, mask)


def _param_groups(model: Segmenter, lr: float, weight_decay: float, layer_decay: float) -> list:
    """The head at ``lr``; a ViT's layers decayed from it (BEiT/MAE), a ResNet at ``lr``;
    weight decay on weights only."""
    backbone = model.features.backbone
    groups = decay_groups(nn.ModuleList([model.norm, model.classify]), weight_decay)
    if backbone.is_vit:
        groups += layer_decay_groups(backbone.model, weight_decay, layer_decay)
    else:
        groups += decay_groups(backbone, weight_decay)
    for g in groups:
        g["base_lr"] = lr * g.get("lr_scale", 1.0)
    return groups


@torch.no_grad()
def predict(model: Segmenter, data: Any, indices: Sequence[int], transform: DenseTransform,
            device: torch.device, batch: int = 16) -> list[torch.Tensor]:  # fmt: skip
    """Label maps of ``data``'s images ``indices``, each at its mask's own size."""
    model.eval()
    out = []
    for s in range(0, len(indices), batch):
        part = [int(i) for i in indices[s : s + batch]]
        x = torch.stack([transform(data.read(i)) for i in part]).to(device)
        logits = model(x).float().cpu()
        sizes = [tuple(data.masks[i].shape) for i in part]
        out += [lg.argmax(0).to(torch.uint8) for lg in upsampled(logits, sizes)]
    return out


def finetune_segmenter(
    loaded: Any,
    data: Any,
    test: Any,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    size: int,
    last: int,
    epochs: int,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    batch_size: int = 16,
    dice_loss: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Fine-tune a copy of ``loaded``'s backbone with a head on ``data``'s images
    ``fit_idx``; pick the epoch on ``val_idx``; report it on ``test``."""
    device = torch.device(device)
    torch.manual_seed(seed)
    k = len(data.classes)
    backbone = copy.deepcopy(loaded.backbone).train()
    model = Segmenter(DenseFeatures(backbone, last), k).to(device)
    channels = loaded.meta.get("in_chans")
    channels = int(channels) if channels else None
    views = MaskViews(size, loaded.mean, loaded.std, channels=channels)
    transform = DenseTransform(size, loaded.mean, loaded.std, channels)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(_Pairs(data, fit_idx, views), batch_size=batch_size, shuffle=True,
                        drop_last=len(fit_idx) > batch_size, generator=g,
                        num_workers=num_workers)  # fmt: skip
    groups = _param_groups(model, lr, weight_decay, layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    total = epochs * len(loader)
    warmup = max(1, total // 10)
    loss_fn = SegmentationLoss(dice_loss)
    val_masks = [torch.from_numpy(data.masks[i].astype(np.int64)) for i in val_idx]
    curve, best, best_state, step = [], -1.0, None, 0
    for epoch in range(epochs):
        model.train()
        for images, masks in loader:
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total, warmup, group["base_lr"], 0.0)
            logits = model(images.to(device))[None]  # one "head" for the shared loss
            loss = loss_fn(logits, list(masks.to(device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        score = mean_foreground_dice(predict(model, data, val_idx, transform, device), val_masks, k)
        curve.append(round(score, 4))
        if score > best:  # ties: the earlier epoch
            best, best_state = (
                score,
                {n: t.detach().cpu().clone() for n, t in model.state_dict().items()},
            )
            picked = epoch
    model.load_state_dict(best_state)
    pred = predict(model, test, range(len(test)), transform, device)
    per_image = [image_figures(p, torch.from_numpy(test.masks[i].astype(np.int64)), k, test.spacing[i])
                 for i, p in enumerate(pred)]  # fmt: skip
    summary = summarise(per_image, data.classes, test.spacing_known)
    return {
        "headline": {"metric": "mean_foreground_dice", "value": summary["mean_foreground_dice"]},
        **summary,
        "finetune": True,
        "n_epochs_trained": epochs,
        "epoch": picked,
        "val_mean_foreground_dice": best,
        "val_curve": curve,
        "lr": lr,
        "layer_decay": layer_decay if backbone.is_vit else None,
        "per_image": per_image,
    }, pred


def run_finetune_segment(
    loaded: Any,
    train: Any,
    test: Any,
    size: int,
    last: int,
    epochs: int,
    lr: float,
    layer_decay: float,
    batch_size: int,
    dice_loss: bool,
    seed: int,
    device: torch.device | str,
    num_workers: int,
    val_fraction: float,
    label_fractions: Sequence[float] | None,
    label_seeds: int,
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """:func:`finetune_segmenter` after the validation split by patient (or on each
    nested label fraction), as the frozen evaluation splits."""

    def fit(idx: np.ndarray, val_idx: np.ndarray, s: int) -> tuple[dict[str, Any], list]:
        return finetune_segmenter(loaded, train, test, idx, val_idx, size, last, epochs, lr,
                                  layer_decay=layer_decay, batch_size=batch_size,
                                  dice_loss=dice_loss, seed=s, device=device,
                                  num_workers=num_workers)  # fmt: skip

    result, pred = split_and_fit(fit, train.presence(), train.groups, len(test), val_fraction,
                                 seed, label_fractions, label_seeds)  # fmt: skip
    return {"task": "segment", "epochs": epochs, "dice_loss": dice_loss, **result,
            "classes": list(train.classes)}, pred  # fmt: skip
