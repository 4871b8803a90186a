"""``selfsup knn | probe | finetune | summary``: the evaluators' options and their runs.

Each command's options are the signature of its function here (plus :class:`EvalSource`,
what every evaluator reads), parsed by :func:`selfsup.commands.options.run_with_options`:
``--config FILE``, ``--print_config`` and flags, as in ``selfsup pretrain``. The last
line of stdout is one JSON object, printed once by rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfsup.commands.options import print_result
from selfsup.data.module import PretrainDataModule
from selfsup.errors import ConfigError
from selfsup.eval.finetune import FinetuneRecipe


@dataclass(frozen=True, kw_only=True)
class EvalSource:
    """The checkpoint evaluated, and the processes that evaluate it.

    The data it is evaluated on is the ``--data.*`` group
    (:class:`selfsup.data.module.PretrainDataModule`, as in pretraining).

    Args:
        ckpt: checkpoint file, run directory, .safetensors export, timm hub folder (or a
            timm weights file with timm_model)
        backbone: student or teacher weights (default: the method's choice)
        pool: ViTs: cls or avg pooling (default: the method's choice)
        timm_model: ckpt is a weights file of this timm ResNet/ViT (e.g. vit_small_patch16_224)
        devices: processes (GPUs, or CPU processes) for extraction
        accelerator: auto, cpu or gpu
        out: evaluation directory (default: RUN/eval/<task>-<data>)
        allow_group_overlap: evaluate even when the train and test splits share groups
            (patients: a manifest's group column, an npz's groups_* arrays); said in the JSON
        feature_precision: feature extraction in bf16 autocast where the hardware runs bf16
            natively (auto: GPUs with bf16, CPUs with AVX-512 bf16 or AMX), or 32 (fp32)
    """

    ckpt: str
    backbone: Literal["student", "teacher"] | None = None
    pool: Literal["cls", "avg"] | None = None
    timm_model: str | None = None
    devices: int = 1
    accelerator: str = "auto"
    out: str | None = None
    allow_group_overlap: bool = False
    feature_precision: Literal["auto", "32"] = "auto"

    def load(self, overrides: dict[str, Any] | None = None) -> Any:
        from selfsup.checkpoints import load_backbone

        loaded = load_backbone(self.ckpt, self.backbone, self.pool, overrides, self.timm_model)
        loaded.meta["eval_precision"] = self.feature_precision
        return loaded

    def eval_dir(self, task: str, data: PretrainDataModule) -> Path:
        from selfsup.eval.report import eval_dir

        return eval_dir(self.ckpt, task, require_path(data), self.out)


def require_path(data: PretrainDataModule) -> str:
    """The evaluators' data has no default: ``--data.path`` names it."""
    if data.path is None:
        raise ConfigError("--data.path is not set: give the labelled data to evaluate on "
                          "(an .npz, a manifest, an image folder with train/ and test/, ...).")  # fmt: skip
    return data.path


def start_processes(devices: int, accelerator: str) -> tuple[Any, Any]:
    """Lightning Fabric's DDP launch when more than one process is asked for (or SLURM
    started several): the other ranks re-run this command. Returns (fabric, device)."""
    import torch

    if devices <= 1 and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        use_gpu = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
        if use_gpu and not torch.cuda.is_available():
            raise ConfigError(f"--accelerator {accelerator}: no GPU here; use cpu or auto.")
        return None, torch.device("cuda" if use_gpu else "cpu")
    from lightning_fabric import Fabric
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp")
    except MisconfigurationException as e:
        raise ConfigError(f"--accelerator {accelerator} --devices {devices}: {e}") from None
    fabric.launch()
    return fabric, fabric.device


def _report(result: dict[str, Any], classes: list[str], out: Path) -> None:
    from selfsup.eval.report import write_report

    print_result(write_report(result, classes, out))


def knn(
    source: EvalSource,
    data: PretrainDataModule,
    k: list[int] = [20, 200],  # noqa: B006 (jsonargparse's schema; never mutated)
    temperature: float = 0.07,
    cache: bool = True,
) -> int:
    """Weighted kNN (cosine) of a checkpoint's features: the train split is the memory bank,
    the test split the queries.

    Args:
        k: neighbours; the first is the headline (top1), the others add top1_k<K>
        temperature: the neighbours' vote weight is exp(similarity / temperature)
        cache: read and store features in $SELFSUP_CACHE (false extracts them again)
    """
    from selfsup.eval.knn import run_knn

    loaded = source.load()
    fabric, device = start_processes(source.devices, source.accelerator)
    result, classes = run_knn(loaded, require_path(data), tuple(k), temperature, data.batch_size,
                              data.num_workers, data.root, cache, device,
                              reading=data.reading,
                              allow_group_overlap=source.allow_group_overlap)  # fmt: skip
    if fabric is None or fabric.is_global_zero:
        result["feature_precision"] = _feature_precision(source, device)
        _report(result, classes, source.eval_dir("knn", data))
    return 0


def _feature_precision(source: EvalSource, device: Any) -> str:
    from selfsup.precision import eval_precision

    return eval_precision(device, source.feature_precision)


def probe(
    source: EvalSource,
    data: PretrainDataModule,
    epochs: int = 100,
    val_fraction: float = 0.1,
    augment: bool = False,
    last_blocks: int = 1,
    avgpool_patches: bool = False,
    seed: int = 0,
    cache: bool = True,
    label_fraction: list[float] | None = None,
    label_seeds: int = 1,
) -> int:
    """Linear probe on frozen, cached features: a grid of heads (learning rates x weight
    decays) trained in one pass, picked on a validation split of the training set
    (validation top-1; macro AUROC for multi-label sets).

    Args:
        epochs: epochs of every head
        val_fraction: share of the training split held out for the pick (stratified per
            class or finding, and by group when the data has groups)
        augment: train on new random crops and flips through the frozen backbone every
            epoch (one backbone pass per epoch) instead of on the cached features
        last_blocks: ViTs: concatenate the pooled tokens of the last K blocks (DINO: 4 for ViT-S)
        avgpool_patches: ViTs with CLS pooling: append the last block's mean patch token
        seed: seed of the split, the heads and the augmentations
        cache: read and store features in $SELFSUP_CACHE (false extracts them again)
        label_fraction: train on these fractions of the training labels (e.g. [0.01,0.1,1.0]):
            nested subsets stratified per class, by group; one row per fraction and a
            curve (label_curve.png)
        label_seeds: subsets drawn per fraction (rows give mean and std over them)
    """
    from selfsup.eval.blocks import block_features
    from selfsup.eval.features import labelled_features
    from selfsup.eval.label_curve import check_label_fractions
    from selfsup.eval.probe import check_probe_options, run_probe, run_probe_augmented

    check_probe_options(val_fraction, augment, label_fraction)
    check_label_fractions(label_fraction, label_seeds)

    loaded = block_features(source.load(), last_blocks, avgpool_patches)
    fabric, device = start_processes(source.devices, source.accelerator)
    train_f, train_y, test_f, test_y, classes = labelled_features(
        loaded, require_path(data), "the linear probe", data.batch_size, data.num_workers,
        data.root, cache, device, reading=data.reading,
        allow_group_overlap=source.allow_group_overlap,
    )  # fmt: skip
    if augment:
        from selfsup.eval.finetune import train_transform
        from selfsup.eval.probe import SeededViews

        views = SeededViews(data.open("train"), train_transform(loaded), seed)
        # Every process takes part in the backbone passes and takes the same head steps.
        result = run_probe_augmented(
            loaded.backbone, views, train_f, train_y, test_f, test_y, classes, val_fraction,
            epochs, data.batch_size, seed=seed, num_workers=data.num_workers, device=device,
        )  # fmt: skip
    elif fabric is None or fabric.is_global_zero:
        result = run_probe(train_f, train_y, test_f, test_y, classes, val_fraction, epochs,
                           seed=seed, label_fractions=label_fraction,
                           label_seeds=label_seeds)  # fmt: skip
    if fabric is not None and not fabric.is_global_zero:
        return 0  # features are on every rank; rank 0 reports
    result.update(backbone=loaded.meta["loaded"], pool=loaded.meta["pool"],
                  features=loaded.meta.get("features", "pooled"), checkpoint=loaded.path,
                  feature_precision=_feature_precision(source, device))  # fmt: skip
    if loaded.meta.get("init_from"):  # where the checkpoint's weights began
        result["init_from"] = loaded.meta["init_from"]
    _report(result, classes, source.eval_dir("probe", data))
    return 0


def finetune(
    source: EvalSource,
    data: PretrainDataModule,
    recipe: FinetuneRecipe,
    label_fraction: list[float] | None = None,
    label_seeds: int = 1,
) -> int:
    """Fine-tune the whole network on labels (AdamW, layer-wise lr decay for ViTs, drop path,
    mixup/cutmix, label smoothing, warm-up + cosine; binary cross-entropy per finding for
    multi-label sets) and measure it on the test split.

    Args:
        label_fraction: fine-tune on these fractions of the training labels (e.g.
            [0.01,0.1,1.0]): nested subsets stratified per class, by group; one row per fraction
        label_seeds: subsets drawn per fraction (rows give mean and std over them)
    """
    from selfsup.eval.finetune import run_finetune
    from selfsup.eval.label_curve import check_label_fractions

    check_label_fractions(label_fraction, label_seeds)

    def load() -> Any:  # afresh for every run of a label-efficiency curve
        return source.load({"drop_path_rate": recipe.drop_path})

    out = source.eval_dir("finetune", data)
    done = run_finetune(load, require_path(data), recipe, out, data.root, data.batch_size,
                        data.num_workers, source.devices, source.accelerator, data.reading,
                        source.allow_group_overlap, label_fraction, label_seeds)  # fmt: skip
    if done is not None:
        _report(*done, out)
    return 0


def summary(dirs: list[str], out: str | None = None, curve_metric: str | None = None) -> int:
    """One table of the metrics.json files under sweep or evaluation directories, and one
    figure of their label-efficiency curves (label_curves.png beside the CSV).

    Args:
        dirs: sweep or evaluation directories (or metrics.json files)
        out: the CSV file (default: DIR/summary.csv of the first directory)
        curve_metric: the figure the curves draw (default: each curve's headline; e.g.
            auroc for a two-class set)
    """
    import sys

    from selfsup.eval.report import gather_metrics, summary_table

    paths = [Path(d) for d in dirs]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p} does not exist.")
    rows = gather_metrics(paths)
    if not rows:
        raise ConfigError(f"No metrics.json under {', '.join(dirs)}: have the tasks finished?")
    csv_path = Path(out) if out else paths[0] / "summary.csv"
    print(summary_table(rows, csv_path, curve_metric))
    print(f"summary: {csv_path}", file=sys.stderr)
    return 0
