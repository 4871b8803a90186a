"""``selfsup finetune``: the whole network trained on labels, the recipe of MAE/BEiT fine-tuning.

Layer-wise learning-rate decay for ViTs (BEiT/MAE layer ids: block i of L trains at
``decay^(L - i)`` of the head's rate, the embeddings at ``decay^(L + 1)``), drop path, mixup and
cutmix with label smoothing (timm's ``Mixup``), AdamW, warm-up + cosine per step.
The learning rate is given per 256 images and scaled by the global batch, as in
pretraining. Test predictions are sharded over processes, each image counted once.

Multi-label sets (one 0/1 column per finding) train K logistic outputs with binary
cross-entropy; mixup, cutmix and label smoothing are left out there (timm's ``Mixup``
mixes one class per image). A validation split (``val_fraction`` of the training images,
carved by patient where the data names patients, stratified per class or finding) is
measured after every epoch (top-1; macro AUROC for multi-label sets), and the best
epoch's weights are the ones measured on the test split (:class:`BestEpoch`);
``val_fraction: 0`` trains on every training image and measures the last epoch. With
label fractions the network is fine-tuned afresh on each nested subset of the images
outside the validation split (:mod:`selfsup.eval.label_curve`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from selfsup.checkpoints import LoadedBackbone
from selfsup.data.module import default_num_workers
from selfsup.data.streams import TransformedDataset
from selfsup.optimizers import decay_groups, layer_decay_groups
from selfsup.precision import cpu_precision
from selfsup.schedules import warmup_cosine


class Classifier(nn.Module):
    """Backbone + linear head: ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # MAE's fine-tuning head init
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class FineTune(pl.LightningModule):
    def __init__(
        self,
        classifier: Classifier,
        num_classes: int,
        base_lr: float = 1e-3,
        weight_decay: float = 0.05,
        layer_decay: float = 0.75,
        warmup_epochs: float = 5.0,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        label_smoothing: float = 0.1,
        batch_size: int = 64,
        multilabel: bool = False,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.hp = dict(base_lr=base_lr, weight_decay=weight_decay, layer_decay=layer_decay,
                       warmup_epochs=warmup_epochs, batch_size=batch_size)  # fmt: skip
        self.mixup = (
            Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            if (mixup > 0 or cutmix > 0) and not multilabel
            else None
        )
        self.multilabel = multilabel
        self.soft_loss = SoftTargetCrossEntropy()
        self.hard_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.multilabel:
            logits = self.classifier(x)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        elif self.mixup is not None and len(x) % 2 == 0:
            x, soft = self.mixup(x, y)
            loss = self.soft_loss(self.classifier(x), soft)
        else:
            loss = self.hard_loss(self.classifier(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp, trainer = self.hp, self.trainer
        lr = (
            hp["base_lr"]
            * hp["batch_size"]
            * trainer.world_size
            * trainer.accumulate_grad_batches
            / 256
        )
        backbone = self.classifier.backbone
        if backbone.is_vit:
            groups = layer_decay_groups(backbone.model, hp["weight_decay"], hp["layer_decay"])
        else:
            groups = decay_groups(backbone, hp["weight_decay"])
        groups += decay_groups(self.classifier.head, hp["weight_decay"])
        for group in groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        opt = torch.optim.AdamW(groups, lr=lr)
        total = int(trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
        warmup = min(round(hp["warmup_epochs"] * steps_per_epoch), total // 2)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, total, warmup, 1.0, 1e-3)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class BestEpoch(pl.Callback):
    """After every training epoch, the validation figure (top-1, or macro AUROC for
    multi-label sets) of the network on ``val`` (eval views, sharded over the processes,
    each image once); the best epoch's weights are kept (on every process: DDP keeps them
    equal) and put back when training ends, so the test measures that epoch."""

    def __init__(self, val: Any, transform: Any, names: list[str], multilabel: bool,
                 batch_size: int, num_workers: int | None) -> None:  # fmt: skip
        self.views = TransformedDataset(val, transform)
        self.names, self.multilabel = names, multilabel
        self.batch_size, self.num_workers = batch_size, num_workers
        self.best, self.epoch, self.state, self.curve = -float("inf"), -1, None, []

    def score(self, classifier: nn.Module, device: torch.device) -> float:
        from selfsup.eval.features import extract_features
        from selfsup.eval.metrics import multilabel_metrics

        logits, labels = extract_features(classifier.eval(), self.views, self.batch_size,
                                          self.num_workers, device)  # fmt: skip
        classifier.train()
        if self.multilabel:
            auroc = multilabel_metrics(logits.sigmoid(), labels, self.names).get("macro_auroc")
            return (
                float(auroc)
                if auroc is not None
                else -float(nn.functional.binary_cross_entropy_with_logits(logits, labels.float()))
            )
        return float((logits.argmax(1) == labels).float().mean())

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        score = self.score(module.classifier, module.device)
        self.curve.append(round(score, 4))
        if score > self.best:  # ties: the earlier epoch
            self.best, self.epoch = score, trainer.current_epoch
            self.state = {
                k: v.detach().cpu().clone() for k, v in module.classifier.state_dict().items()
            }

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.state is not None:
            module.classifier.load_state_dict(self.state)

    def fields(self) -> dict[str, Any]:
        metric = "macro_auroc" if self.multilabel else "top1"
        return {"epoch": self.epoch, f"val_{metric}": self.best, "val_curve": self.curve}


def train_transform(loaded: LoadedBackbone) -> v2.Compose:
    """Random resized crop (0.08, 1) and flip at the pretraining size, then normalise."""
    size = int(loaded.meta["image_size"])
    return v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(size, scale=(0.08 if size > 64 else 0.35, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.Normalize(mean=loaded.mean, std=loaded.std),
    ])  # fmt: skip


def train_loader(
    dataset: Any, loaded: LoadedBackbone, batch_size: int, workers: int | None
) -> DataLoader:
    workers = default_num_workers() if workers is None else workers
    return DataLoader(
        TransformedDataset(dataset, train_transform(loaded)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= 2 * batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


@dataclass
class FinetuneRecipe:
    """How the whole network trains on labels.

    Args:
        epochs: training epochs
        lr: peak learning rate per 256 images (scaled by the global batch)
        weight_decay: AdamW weight decay
        layer_decay: ViTs: layer-wise learning-rate decay (0.65-0.75)
        drop_path: stochastic depth rate
        mixup: mixup alpha (0 switches it off)
        cutmix: cutmix alpha (0 switches it off)
        smoothing: label smoothing
        warmup_epochs: linear warm-up length
        precision: 32, bf16-mixed or 16-mixed
        seed: seed of the head, the data order and the validation split
        val_fraction: share of the training images (by patient) the epoch is picked on;
            0 trains on all of them and measures the last epoch
    """

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    warmup_epochs: float = 5.0
    precision: str = "32"
    seed: int = 0
    val_fraction: float = 0.1


def run_finetune(
    load: Callable[[], LoadedBackbone],
    data: str,
    recipe: FinetuneRecipe,
    out: Path | None = None,
    root: str | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    devices: int = 1,
    accelerator: str = "auto",
    reading: Any = None,
    allow_group_overlap: bool = False,
    label_fractions: Sequence[float] | None = None,
    label_seeds: int = 1,
) -> tuple[dict[str, Any], list[str]] | None:
    """Fine-tune a backbone from ``load()`` (built with ``drop_path_rate=recipe.drop_path``)
    on the train split of ``data`` and measure it on the test split (Lightning DDP with
    ``devices`` > 1); with ``label_fractions``, once per fraction and seed on nested subsets
    of the training split. Returns the figures and class names on rank 0, None on the
    other ranks. Train and test splits that share groups (patients) stop before training
    unless ``allow_group_overlap``."""
    from selfsup.data.datasets import open_dataset
    from selfsup.errors import ConfigError
    from selfsup.eval.features import EvalNotes, check_group_overlap
    from selfsup.eval.label_curve import label_curve
    from selfsup.eval.metrics import label_warnings

    train = open_dataset(data, "train", root, reading=reading)
    test = open_dataset(data, "test", root, reading=reading)
    if train.targets is None or test.targets is None:
        raise ConfigError(
            f"{data} has no labels: fine-tuning needs labelled train and test splits."
        )
    notes = EvalNotes()
    notes.shared_groups = check_group_overlap(train, test, data, allow_group_overlap, notes)
    targets = np.asarray(train.targets)
    multilabel = targets.ndim == 2
    for message in label_warnings(torch.from_numpy(targets), torch.as_tensor(test.targets),
                                  list(train.classes)):  # fmt: skip
        notes.warn(message)
    if multilabel and (recipe.mixup > 0 or recipe.cutmix > 0 or recipe.smoothing > 0):
        notes.warn("mixup, cutmix and label smoothing apply to single-label sets; the findings "
                   "train with plain binary cross-entropy.")  # fmt: skip
    n_out = targets.shape[1] if multilabel else max(len(train.classes), int(targets.max()) + 1)
    groups = getattr(train, "groups", None)
    if not 0 <= recipe.val_fraction < 1:
        raise ConfigError(f"--val_fraction {recipe.val_fraction}: give a fraction in "
                          "[0, 1), e.g. 0.1 (0: no validation split, the last epoch).")  # fmt: skip
    fit_idx, val_idx = np.arange(len(train)), None
    if recipe.val_fraction > 0:
        from selfsup.eval.splits import group_split

        fit_idx, val_idx = group_split(targets, groups, recipe.val_fraction, recipe.seed)
    val = None if val_idx is None else Subset(train, val_idx.tolist())
    zero = True

    def fit(indices: np.ndarray, seed: int) -> dict[str, Any]:
        nonlocal zero
        figures, zero = _fit_and_measure(
            load(), Subset(train, fit_idx[indices].tolist()), val, test, recipe, seed, n_out,
            multilabel, list(train.classes), batch_size, num_workers, devices, accelerator, out,
        )  # fmt: skip
        return figures

    if label_fractions is None:
        result = fit(np.arange(len(fit_idx)), recipe.seed)
    else:
        fit_groups = None if groups is None else np.asarray(groups)[fit_idx]
        result = {"task": "finetune", **label_curve(targets[fit_idx], fit_groups, label_fractions,
                                                    label_seeds, recipe.seed, fit)}  # fmt: skip
    if not zero:
        return None
    if "runs" in result:  # a curve: its runs share the backbone and checkpoint
        result.update(backbone=result["runs"][0]["backbone"],
                      checkpoint=result["runs"][0]["checkpoint"])  # fmt: skip
    r = recipe
    result.update(
        epochs=r.epochs, lr=r.lr, layer_decay=r.layer_decay, drop_path=r.drop_path,
        mixup=r.mixup, cutmix=r.cutmix, smoothing=r.smoothing, n_train=len(fit_idx),
        n_val=0 if val_idx is None else len(val_idx), n_test=len(test),
        classes=list(train.classes), **notes.fields(),
    )  # fmt: skip
    return result, list(train.classes)


def _fit_and_measure(
    loaded: LoadedBackbone, train: Any, val: Any, test: Any, r: FinetuneRecipe, seed: int,
    n_out: int,
    multilabel: bool, names: list[str], batch_size: int, num_workers: int | None,
    devices: int, accelerator: str, out: Path | None,
) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """One fine-tuning run -> its test figures (on every process; of the epoch best on
    ``val``, or the last without one) and whether this is rank 0."""
    from selfsup.eval.features import extract_features
    from selfsup.eval.metrics import classification_metrics, multilabel_metrics

    pl.seed_everything(seed, verbose=False)
    precision, why = cpu_precision(r.precision, accelerator)
    if why:
        rank_zero_only(print)(why, file=sys.stderr, flush=True)
    classifier = Classifier(loaded.backbone.train(), n_out)
    best = None if val is None else BestEpoch(val, loaded.eval_transform(), names, multilabel,
                                              batch_size, num_workers)  # fmt: skip
    module = FineTune(classifier, n_out, r.lr, r.weight_decay, r.layer_decay, r.warmup_epochs,
                      r.mixup, r.cutmix, r.smoothing, batch_size, multilabel)  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=r.epochs, accelerator=accelerator, devices=devices,
        strategy="ddp" if devices > 1 else "auto", precision=precision,
        logger=pl.loggers.CSVLogger(str(out), name="", version="") if out else False,
        enable_checkpointing=False, default_root_dir=str(out) if out else None,
        enable_model_summary=False, log_every_n_steps=10,
        callbacks=[] if best is None else [best],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=train_loader(train, loaded, batch_size, num_workers))
    # Test logits, each image once, in dataset order, on every process.
    logits, labels = extract_features(
        classifier.eval(), TransformedDataset(test, loaded.eval_transform()),
        batch_size, num_workers, module.device,
    )  # fmt: skip
    if multilabel:
        figures = multilabel_metrics(logits.sigmoid(), labels, names)
    else:
        figures = classification_metrics(logits.softmax(1), labels, names)
    result = {"task": "finetune", **figures, "backbone": loaded.meta["loaded"],
              "checkpoint": loaded.path, "precision": str(precision),
              **({"epoch": r.epochs - 1} if best is None else best.fields())}  # fmt: skip
    if loaded.meta.get("init_from"):  # where the checkpoint's weights began
        result["init_from"] = loaded.meta["init_from"]
    return result, trainer.is_global_zero
