"""``selfsup segment``: a checkpoint's dense features measured against masks.

Its options are the signature of :func:`segment` plus :class:`EvalSource` and the
``--data.*`` group, as for the other evaluators (:mod:`selfsup.commands.evaluate`); the
last line of stdout is one JSON object, printed once by rank 0.
"""

from __future__ import annotations

from typing import Any

from selfsup.commands.evaluate import EvalSource, require_path, start_processes
from selfsup.commands.options import print_result
from selfsup.data.module import PretrainDataModule
from selfsup.errors import ConfigError


def segment(
    source: EvalSource,
    data: PretrainDataModule,
    epochs: int = 40,
    val_fraction: float = 0.2,
    last_blocks: int = 1,
    stages: int = 1,
    size: int | None = None,
    dice_loss: bool = False,
    head_batch_size: int = 16,
    seed: int = 0,
    cache: bool = True,
    label_fraction: list[float] | None = None,
    label_seeds: int = 1,
    overlays: int = 6,
    save_predictions: bool = False,
    attention: bool = False,
    attention_threshold: float = 0.6,
    finetune: bool = False,
    finetune_lr: float = 1e-4,
    layer_decay: float = 0.75,
) -> int:
    """Linear segmentation on frozen dense features (DINOv2's linear head: BatchNorm + 1x1
    convolution, logits upsampled to each mask): a grid of learning rates trained in one
    pass over cached features, picked on a validation split carved by patient (mean
    foreground Dice), reported on the test split: per-class Dice, IoU, HD95, ASD (mm where
    the pixel spacing is known), volume similarity, sensitivity, specificity, the empty
    cases and Dice by structure size. Data: an .npz with m_train/m_test masks, a folder with
    <split>/images/ and <split>/masks/ (label maps or DICOM SEG), or a manifest with a mask
    column (label maps, DICOM SEG, NIfTI label volumes).

    Args:
        epochs: epochs of every head
        val_fraction: share of the training images held out for the pick (by patient)
        last_blocks: ViTs: concatenate the patch tokens of the last K blocks
        stages: ResNets: concatenate the last K stages' maps (upsampled to the finest)
        size: the side images are resized to, whole (default: the checkpoint's image size)
        dice_loss: add MONAI's Dice loss (foreground classes) to the cross-entropy
        head_batch_size: images per step of the heads
        seed: seed of the split and the heads
        cache: read and store features in $SELFSUP_CACHE (false extracts them again)
        label_fraction: train on these fractions of the training images (e.g. [0.25,1.0]):
            nested subsets by patient; one row per fraction and a curve (label_curve.png)
        label_seeds: subsets drawn per fraction (rows give mean and std over them)
        overlays: test images drawn in overlays.png (image | reference | prediction)
        save_predictions: write the predicted test masks to predictions.npz
        attention: ViTs: also score DINO's segmentation maps, the last block's attention
            thresholded to keep attention_threshold of its mass, against the foreground
            (Jaccard of the heads' mean and of the best head, picked on the training images)
        attention_threshold: share of the attention mass the masks keep (DINO: 0.6)
        finetune: train the backbone with the head (random resized crops of image and mask,
            AdamW, layer-wise decay for ViTs, warm-up + cosine), the epoch picked on the
            validation split; one process
        finetune_lr: the head's learning rate when fine-tuning (the backbone's layers decay
            from it)
        layer_decay: ViTs, when fine-tuning: each block down trains at this factor of the
            rate above it
    """
    import time

    import torch

    from selfsup.data.segmentation import open_segmentation
    from selfsup.eval.dense_features import DenseLoaded
    from selfsup.eval.features import EvalNotes, check_group_overlap, split_features
    from selfsup.eval.label_curve import check_label_fractions
    from selfsup.eval.segment import run_segment
    from selfsup.precision import eval_precision

    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val_fraction {val_fraction}: give a fraction in (0, 1), e.g. 0.2.")
    check_label_fractions(label_fraction, label_seeds)
    if finetune and source.devices > 1:
        raise ConfigError("--finetune true trains in one process: drop --devices (the frozen "
                          "heads, without --finetune, extract their features on several).")  # fmt: skip
    if finetune and attention:
        raise ConfigError("--attention true scores the checkpoint's own attention maps: run it "
                          "without --finetune.")  # fmt: skip
    path = require_path(data)
    train = open_segmentation(path, "train", data.intensity, data.reading)
    test = open_segmentation(path, "test", data.intensity, data.reading)
    if train.classes != test.classes:
        raise ConfigError(f"{path}: the train masks name classes {train.classes} but the test "
                          f"masks {test.classes}; give both splits the same classes.")  # fmt: skip
    notes = EvalNotes()
    notes.shared_groups = check_group_overlap(train, test, path, source.allow_group_overlap, notes)
    loaded = source.load()
    if loaded.backbone.is_vit and stages != 1:
        raise ConfigError("--stages applies to ResNets; for a ViT use --last_blocks.")
    if not loaded.backbone.is_vit and last_blocks != 1:
        raise ConfigError("--last_blocks applies to ViTs; for a ResNet use --stages.")
    if attention and not loaded.backbone.is_vit:
        raise ConfigError("--attention true scores a ViT's attention maps; this backbone is a "
                          f"ResNet ({loaded.backbone.name}): drop --attention.")  # fmt: skip
    dense = DenseLoaded(loaded, last_blocks if loaded.backbone.is_vit else stages, size)
    if finetune:
        from selfsup.eval.segment_finetune import run_finetune_segment

        _, device = start_processes(1, source.accelerator)
        start = time.perf_counter()
        result, pred = run_finetune_segment(
            loaded, train, test, dense.size, last_blocks if loaded.backbone.is_vit else stages,
            epochs, finetune_lr, layer_decay, head_batch_size, dice_loss, seed, device,
            data.num_workers or 0, val_fraction, label_fraction, label_seeds,
        )  # fmt: skip
        result.update(backbone=loaded.meta["loaded"], checkpoint=loaded.path, size=dense.size,
                      features=dense.backbone.describe(),
                      seconds={"finetune": round(time.perf_counter() - start, 1)},
                      **notes.fields())  # fmt: skip
        masks_test = [torch.from_numpy(m) for m in test.masks]
        _write_segment(source, data, result, pred, train, test, masks_test, overlays,
                       save_predictions)  # fmt: skip
        return 0
    fabric, device = start_processes(source.devices, source.accelerator)
    start = time.perf_counter()
    feats = {}
    for split, dataset in (("train", train), ("test", test)):
        f, order, _, _ = split_features(dense, path, split, dataset.images(), data.batch_size,
                                        data.num_workers, cache, device)  # fmt: skip
        assert torch.equal(order, torch.arange(len(dataset)))  # dataset order
        feats[split] = f
    extracted = time.perf_counter()
    if fabric is not None and not fabric.is_global_zero:
        return 0  # features are on every rank; rank 0 trains the heads and reports
    masks = {
        s: [torch.from_numpy(m) for m in d.masks] for s, d in (("train", train), ("test", test))
    }
    result, pred = run_segment(
        feats["train"], masks["train"], feats["test"], masks["test"], train.classes,
        train.groups, train.presence(), test.spacing, val_fraction, epochs, head_batch_size,
        dice_loss=dice_loss, seed=seed, label_fractions=label_fraction, label_seeds=label_seeds,
    )  # fmt: skip
    result.update(
        backbone=loaded.meta["loaded"], checkpoint=loaded.path, features=dense.backbone.describe(),
        size=dense.size, feature_grid=list(feats["train"].shape[-2:]),
        feature_precision=eval_precision(device, source.feature_precision),
        seconds={"features": round(extracted - start, 1),
                 "heads": round(time.perf_counter() - extracted, 1)},
        **notes.fields(),
    )  # fmt: skip
    if attention:
        from selfsup.eval.attention_masks import attention_report

        result["attention"] = attention_report(loaded.backbone, dense.eval_transform(), train,
                                               test, attention_threshold)  # fmt: skip
    if loaded.meta.get("init_from"):
        result["init_from"] = loaded.meta["init_from"]
    _write_segment(source, data, result, pred, train, test, masks["test"], overlays,
                   save_predictions)  # fmt: skip
    return 0


def _write_segment(source: EvalSource, data: PretrainDataModule, result: dict, pred: list,
                   train: Any, test: Any, masks: list, overlays: int, predictions: bool) -> None:  # fmt: skip
    """metrics.json, overlays.png and (asked) predictions.npz in the evaluation directory."""
    from selfsup.eval.segment import save_overlays, save_predictions

    out = source.eval_dir("segment", data)
    out.mkdir(parents=True, exist_ok=True)
    shown = min(overlays, len(test))
    save_overlays([test[i][0] for i in range(shown)], masks, pred, train.classes,
                  out / "overlays.png", shown)  # fmt: skip
    if predictions:
        save_predictions(pred, train.classes, test.files, out / "predictions.npz")
    from selfsup.eval.report import write_report

    print_result(write_report(result, train.classes, out))
