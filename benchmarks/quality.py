"""Learning per CPU-minute: kNN top-1 after a fixed wall-clock budget, selfsup vs lightly.

    .venv/bin/python benchmarks/quality.py --runs selfsup/simclr lightly/simclr
        [--data cifar|pneumonia] [--budget-min 10] [--seeds 2] [--points 3] [--workers 1]
        [--baselines] [--tag TAG] [--threads N] [--before REV] [--set KEY=VALUE ...]
        [--match-steps] [--eval-backbone student|teacher]
    .venv/bin/python benchmarks/quality.py --render      # table and PNG from the records

Each run pretrains on ../shared/data/cifar10_jpeg.npz (15,000 training images) for
``--budget-min`` minutes of training time, once per seed:

- ``selfsup/METHOD``: selfsup's recommended CIFAR config (``configs/METHOD/*_cifar.yaml``,
  its precision, batch and optimiser) with its schedule compressed into the budget: the
  step count comes from the step time measured on a few calibration steps, and every
  ``*_epochs`` setting (warm-up, teacher-temperature warm-up, frozen last layer) shrinks
  by (epochs in the budget / the config's epochs).
- ``selfsup/METHOD_small``: the short-budget recipe (``configs/METHOD/*_small.yaml``: batch
  64), compressed into the budget the same way.
- ``lightly/METHOD``: lightly's recipe (benchmarks/lightly_recipes.py) as lightly's
  CIFAR-10 benchmark runs it: its transforms (ImageNet normalisation), batch 128, fp32,
  SGD 0.06 with the cosine over the epochs that fit in the budget. MAE and I-JEPA, which
  lightly's CIFAR-10 benchmark lacks, as lightly's examples set them up (batch 256).

Training time excludes the evaluations: at ``--points`` evenly spaced marks the clock
stops, and weighted kNN (k = 20, T = 0.07, cosine; the evaluator of ``selfsup knn``) on
the test split (5,000 images) against the training split's features is measured, in bf16
autocast for every run (fp32 on a CPU without native bf16, where selfsup's configs train
in fp32 too: ``selfsup.precision``; each record keeps the precision it trained in). MAE
and I-JEPA also get the cached-feature linear probe at the end. Each record also keeps how
far the backbone's weights moved from their start (median relative change of the conv
and linear weights, and of the norm layers' scales). ``--baselines`` adds raw
pixels (normalised by the channel means and standard deviations, cosine) and random-init
ResNet-18 (timm's start and torchvision's) and ViT-Tiny/4 backbones, where they are not
recorded yet (``--force``: all again).

Records go to benchmarks/quality_runs.json (one entry per run, seed, budget and ``--tag``;
existing entries are kept), and every invocation rewrites the "Learning per CPU-minute"
section of benchmarks/RESULTS.md and benchmarks/quality_knn.png from all of them: the
10-minute untagged runs are its main table and figure; runs at other budgets or with a
tag get a table each below it (with the minute their kNN curve reaches raw pixels') and
benchmarks/quality_knn_budgets.png. ``--threads`` sets torch's thread count (default:
torch's own) and is recorded with each run. ``--before REV`` runs selfsup's configs as
committed at git revision REV (with today's code) under the names ``selfsup/METHOD@REV``,
so that a tag's table holds the configs before and after a change, run on one machine;
``--set KEY=VALUE`` changes options of selfsup's runs as ``selfsup pretrain`` would
(``--set model.init_args.lars_clip=false``), recorded as
``selfsup/METHOD[lars_clip=false]``: one factor at a time, beside today's config.
``--match-steps`` gives each such run (``--before``, ``--set`` or both) the step count of
today's config's recorded run (same budget, seed and tag) instead of its own
calibration's. ``--eval-backbone student`` (or ``teacher``) evaluates that backbone of
selfsup's runs rather than the method's own choice (DINO and I-JEPA: the teacher), as
``selfsup probe --backbone`` does, recorded as ``selfsup/dino[backbone=student]``: with
``--match-steps`` the same seed trains the same steps, so the two records differ in the
backbone read and nothing else.
A selfsup record keeps its config's fingerprint (the config's text and ``--set``); a
recorded run whose config has changed since is not rerun under the same tag, and says
so: a new ``--tag`` (or ``--force``) runs the config as it is now.

``--data pneumonia`` runs on PneumoniaMNIST instead (benchmarks/quality_data.py: 1-channel
28 px images, train split pretrained on and used as memory bank, test split as queries).
Every run then reports kNN accuracy and kNN AUROC (the score of an image: the weighted
vote share of class 1) at each mark and the linear probe's accuracy and AUROC at its end.
selfsup's configs get the grayscale overrides (``in_chans`` 1, ``grayscale`` views, mean
0.5, std 0.25, 28 px; the ViTs keep their patch, 4 for MAE: a 7 x 7 grid, 2 for I-JEPA:
14 x 14); lightly's recipes see the images repeated to 3 channels at 28 px, with their
own transforms and ImageNet normalisation. ``--baselines`` there: raw pixels (kNN on
per-image mean-centred pixels, and a logistic regression on standardised pixels) and
random-init 1-channel ResNet-18 (timm's start, and with ``zero_init_last`` false),
ViT-Tiny/4 and ViT-Tiny/2, and lightly's random-init ResNet-18 as lightly's recipes see
the images (3 channels, ImageNet normalisation). Records go to
benchmarks/quality_pneumonia_runs.json, the section "Medical images: PneumoniaMNIST" of
RESULTS.md and benchmarks/quality_pneumonia.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import quality_report
from common import REPO, committed_text, machine, write_section
from lightly_recipes import IMAGENET_MEAN, IMAGENET_STD, RECIPES
from lightly_recipes import resnet18 as lightly_resnet18
from quality_data import (
    DATASETS,
    GRAY_MEAN,
    GRAY_STD,
    QualityData,
    lightly_module,
    normalised,
    pneumonia_baselines,
    untrained_variants,
    with_data_bn_stats,
)
from quality_data import selfsup_overrides as gray_overrides
from selfsup.precision import cpu_has_native_bf16, cpu_precision

RECORDS = REPO / "benchmarks/quality_runs.json"
PLOT = REPO / "benchmarks/quality_knn.png"
OUTPUTS = {  # data: (records, figure)
    "cifar": (RECORDS, PLOT),
    "pneumonia": (REPO / "benchmarks/quality_pneumonia_runs.json",
                  REPO / "benchmarks/quality_pneumonia.png"),
}  # fmt: skip
#: the budget and tag of the main CIFAR table and figure
REFERENCE = (10.0, None)
METHODS = {  # method: (selfsup config, lightly's counterpart)
    "simclr": ("configs/simclr/resnet18_cifar.yaml", "simclr"),
    "triplet": ("configs/triplet/resnet18_cifar.yaml", "simclr"),
    "byol": ("configs/byol/resnet18_cifar.yaml", "byol"),
    "dino": ("configs/dino/resnet18_cifar.yaml", "dino"),
    "mae": ("configs/mae/vit_tiny_cifar.yaml", "mae"),
    "ijepa": ("configs/ijepa/vit_tiny_cifar.yaml", "ijepa"),
}
#: the short-budget recipes, run as ``selfsup/METHOD_small`` (MAE and I-JEPA need none;
#: DINO's collapsed: benchmarks/RESULTS.md)
SMALL = {
    f"{method}_small": (f"configs/{method}/resnet18_small.yaml", METHODS[method][1])
    for method in ("simclr", "triplet", "byol")
}
PROBED = {"mae", "ijepa"}  # kNN is weak by design on reconstruction / latent prediction
LIGHTLY_BATCH = {"mae": 256, "ijepa": 256}
K, T = 20, 0.07
WANTED_SEEDS = 2  # seeds each run of a 10-minute untagged table should have, whatever --seeds ran
NATIVE_BF16 = cpu_has_native_bf16()


# -- data and evaluation -------------------------------------------------------------------
@torch.no_grad()
def features(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mean, std,
             batch: int = 500) -> torch.Tensor:  # fmt: skip
    """Features of uint8 ``images`` normalised by ``mean``/``std`` (:func:`normalised`)."""
    out = []
    for x in normalised(images, mean, std, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=NATIVE_BF16):
            out.append(fn(x).float())
    return torch.cat(out)


def auroc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` for class 1 (Mann-Whitney U, ties count half)."""
    pos, neg = score[labels == 1], score[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return (greater / (len(pos) * len(neg))).item()


def evaluate(fn, data, mean, std, probe: bool = False, knn: bool = True) -> dict[str, float]:
    """Weighted kNN top-1 (and, on two named classes, its AUROC: the weighted vote share
    of class 1 as score); with ``probe`` the cached-feature linear probe's top-1 (and AUROC
    on two classes)."""
    from selfsup.knn import knn_scores, knn_top1

    train_f = features(fn, data["x_train"], mean, std)
    test_f = features(fn, data["x_test"], mean, std)
    classes = data.get("classes")
    result = {}
    if knn and classes is not None and len(classes) == 2:
        votes = knn_scores(train_f, data["y_train"], test_f, 2, (K,), T)[K]
        result["knn"] = (votes.argmax(1) == data["y_test"]).float().mean().item()
        result["knn_auroc"] = auroc(votes[:, 1] / votes.sum(1), data["y_test"])
    elif knn:
        result["knn"] = knn_top1(train_f, data["y_train"], test_f, data["y_test"], K, T)
    if probe:
        from selfsup.eval.probe import run_probe

        names = list(classes) if classes is not None else None
        fitted = run_probe(train_f, data["y_train"], test_f, data["y_test"], names)
        result["probe"] = fitted["top1"]
        if "auroc" in fitted:
            result["probe_auroc"] = fitted["auroc"]
    return result


# -- the budget ------------------------------------------------------------------------------
class Budget(pl.Callback):
    """Training clock (evaluations excluded); kNN at the marks; stop at the budget."""

    def __init__(self, budget_s: float, points: int, evaluate_fn, stop: bool = True) -> None:
        self.budget_s, self.evaluate_fn, self.stop = budget_s, evaluate_fn, stop
        self.marks = [budget_s * (i + 1) / points for i in range(points - 1)]
        self.curve: list[dict[str, float]] = []
        self.train_s = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {name: w.detach().clone() for name, w in _weights(pl_module).items()}
        self._t = time.perf_counter()

    def moved(self, pl_module) -> dict[str, float]:
        """Median relative move |w - w0| / |w0| of the backbone's conv and linear weights
        and of its norm layers' scales since the start: how far a run left its random
        initialisation (what an optimiser's trust ratio bounds). Weights that start at
        zero (timm's zero-initialised last BatchNorm of each residual block) have no
        relative move and are left out."""
        kinds: dict[str, list[float]] = {"conv_linear": [], "norm": []}
        for name, w in _weights(pl_module).items():
            w0 = self.start[name]
            if w0.norm() > 0:
                kind = "conv_linear" if w.ndim > 1 else "norm"
                kinds[kind].append(((w.detach() - w0).norm() / w0.norm()).item())
        return {kind: statistics.median(v) for kind, v in kinds.items() if v}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.train_s += now - self._t
        if self.marks and self.train_s >= self.marks[0]:
            self.marks.pop(0)
            self.point(trainer, pl_module)
        if self.stop and self.train_s >= self.budget_s:
            trainer.should_stop = True
        self._t = time.perf_counter()

    def point(self, trainer, pl_module, **extra) -> None:
        was_training = pl_module.training
        pl_module.eval()
        result = self.evaluate_fn(pl_module, **extra)
        pl_module.train(was_training)
        if self.curve and self.curve[-1]["step"] == trainer.global_step:
            self.curve.pop()  # the end fell on a mark: keep the final evaluation only
        self.curve.append({"minutes": self.train_s / 60, "step": trainer.global_step, **result})
        print(f"    {self.train_s / 60:5.2f} min, step {trainer.global_step}: {result}", flush=True)


def _weights(pl_module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's conv and linear weights and its norm layers' scales, by name."""
    backbone = getattr(pl_module, "backbone", pl_module)
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    out = {}
    for name, module in backbone.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, *norms)) and \
                getattr(module, "weight", None) is not None:  # fmt: skip
            out[name] = module.weight
    return out


class StepClock(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def _trainer(precision: str, max_steps: int, callbacks: list) -> pl.Trainer:
    precision = cpu_precision(precision, "cpu")[0]  # as selfsup pretrain would run it
    return pl.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=max_steps, max_epochs=-1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        default_root_dir=tempfile.gettempdir(),
    )  # fmt: skip


def fit(trainer: pl.Trainer, module: pl.LightningModule, loader: Any) -> None:
    if isinstance(loader, pl.LightningDataModule):
        trainer.fit(module, datamodule=loader)
    else:
        trainer.fit(module, train_dataloaders=loader)


def calibrate(build: Callable[[], tuple[Any, Any, str]], steps: int = 6) -> float:
    """Median step time (s) of the last ``steps - 2`` of ``steps`` steps of a fresh build."""
    module, loader, precision = build()
    clock = StepClock()
    fit(_trainer(precision, steps + 1, [clock]), module, loader)
    gaps = [b - a for a, b in zip(clock.starts[2:-1], clock.starts[3:])]
    return statistics.median(gaps)


# -- the two sides ---------------------------------------------------------------------------
def config_text(method: str, rev: str | None) -> str:
    """selfsup's config of ``method``: as committed at ``rev``, or as it is now."""
    rel = {**METHODS, **SMALL}[method][0]
    return committed_text(rel, rev, "quality") if rev else (REPO / rel).read_text()


def config_file(method: str, rev: str | None) -> Path:
    """selfsup's config of ``method`` as a file: at ``rev`` a temporary copy (named as the
    config, which the records keep), else the config itself."""
    rel = {**METHODS, **SMALL}[method][0]
    if not rev:
        return REPO / rel
    folder = Path(tempfile.mkdtemp(prefix="selfsup-bench-"))
    (folder / Path(rel).name).write_text(config_text(method, rev))
    return folder / Path(rel).name


def config_fingerprint(method: str, rev: str | None, sets: dict[str, str] | None) -> str:
    """:func:`quality_report.fingerprint` of ``method``'s config (at ``rev``, or as it is
    now) and its ``--set`` options. Records keep it, so that a config edited since a run
    is not taken for the config that run trained."""
    return quality_report.fingerprint(config_text(method, rev), sets)


def set_flags(sets: dict[str, str]) -> list[str]:
    """``--set`` as ``selfsup pretrain`` flags: {"model.init_args.lars_clip": "false"} ->
    ["--model.init_args.lars_clip", "false"]."""
    return [arg for key, value in sets.items() for arg in (f"--{key}", value)]


BACKBONE_KWARGS = "model.init_args.backbone_kwargs"


def gray_run(cfg: dict, size: int, sets: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The 1-channel overrides of ``cfg`` and the ``--set`` options left to pass after them.
    The overrides restate ``backbone_kwargs`` (with ``in_chans`` 1), so a ``--set`` of it
    joins them: passed after them it would replace them and drop ``in_chans``."""
    sets = dict(sets)
    if BACKBONE_KWARGS in sets:
        cfg = copy.deepcopy(cfg)
        cfg["model"]["init_args"]["backbone_kwargs"] = yaml.safe_load(sets.pop(BACKBONE_KWARGS))
    return gray_overrides(cfg, size), sets


def compress_schedule(model: pl.LightningModule, scale: float) -> None:
    """Every ``*_epochs`` value of a selfsup method (warm-up, teacher temperature and
    momentum schedules, frozen last layer) times ``scale``: a run of ``scale`` times the
    config's epochs goes through its whole schedule."""
    for key in list(model.hparams):
        if key.endswith("_epochs") and isinstance(model.hparams[key], (int, float)):
            model.hparams[key] = type(model.hparams[key])(model.hparams[key] * scale)


def eval_features(eval_backbone: str | None) -> Callable[[Any], Callable]:
    """What a selfsup run is evaluated on: the method's own choice (DINO's and I-JEPA's
    teacher, the others' student), or the ``student``'s or the ``teacher``'s backbone, as
    ``selfsup probe --backbone`` loads it (``SelfSupervisedMethod.eval_module``)."""
    return lambda m: m.eval_module(eval_backbone)


def has_teacher(method: str, rev: str | None = None) -> bool:
    """Whether ``method``'s config (at ``rev``) trains a method with an EMA teacher."""
    from selfsup.methods import TeacherStudentMethod
    from selfsup.methods.registry import method_class

    class_path = yaml.safe_load(config_text(method, rev))["model"]["class_path"]
    return issubclass(method_class(class_path), TeacherStudentMethod)


def selfsup_side(method: str, seed: int, workers: int, data: dict, dataset: QualityData,
                 rev: str | None = None, sets: dict[str, str] | None = None,
                 eval_backbone: str | None = None) -> dict[str, Any]:  # fmt: skip
    from selfsup.train.run import build_pretrain_cli

    rel = {**METHODS, **SMALL}[method][0]
    config = config_file(method, rev)
    cfg = yaml.safe_load(config.read_text())
    precision, epochs = cfg["trainer"]["precision"], cfg["trainer"]["max_epochs"]
    batch = cfg["data"]["batch_size"]
    transform = cfg["data"]["transform"]["init_args"]
    mean, std, overrides, flags = transform["mean"], transform["std"], [], dict(sets or {})
    if dataset.name != "cifar":  # 1-channel images: the grayscale overrides
        overrides, flags = gray_run(cfg, dataset.size, flags)
        mean, std = GRAY_MEAN, GRAY_STD

    def build(scale: float = 1.0, max_steps: int | None = None):
        pl.seed_everything(seed, verbose=False)
        argv = ["--config", str(config), "--data.path", str(dataset.path),
                "--data.num_workers", str(workers), "--trainer.logger", "false",
                "--seed_everything", str(seed),
                "--trainer.default_root_dir", tempfile.gettempdir(), *overrides,
                *set_flags(flags)]  # fmt: skip
        cli = build_pretrain_cli(argv)
        compress_schedule(cli.model, scale)
        return cli.model, cli.datamodule, precision

    return {
        "build": build, "precision": precision, "batch": batch, "config_epochs": epochs,
        "config": rel + (f" at {rev}" if rev else ""), "overrides": overrides,
        "features": eval_features(eval_backbone), "mean": mean, "std": std,
    }  # fmt: skip


class _Views(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        image = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        return self.transform(image), int(self.labels[i])


def lightly_transform(method: str, size: int = 32):
    from lightly import transforms as lt
    from lightly.transforms.ijepa_transform import IJEPATransform

    if method == "simclr":
        return lt.SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0)
    if method == "byol":
        return lt.BYOLTransform(
            view_1_transform=lt.BYOLView1Transform(input_size=size, gaussian_blur=0.0),
            view_2_transform=lt.BYOLView2Transform(input_size=size, gaussian_blur=0.0),
        )
    if method == "dino":
        return lt.DINOTransform(
            global_crop_size=size, n_local_views=0, cj_strength=0.5, gaussian_blur=(0, 0, 0)
        )
    if method == "mae":
        return lt.MAETransform(input_size=size)
    return IJEPATransform(input_size=size)


def lightly_side(method: str, seed: int, workers: int, data: dict,
                 dataset: QualityData) -> dict[str, Any]:  # fmt: skip
    recipe = METHODS[method][1]
    batch = LIGHTLY_BATCH.get(recipe, 128)
    backbone = "vit_tiny" if recipe in PROBED else "resnet18"
    images, size = data["x_train"], dataset.size
    if images.shape[1] == 1:  # lightly's transforms and models take RGB: gray repeated
        images = images.repeat(1, 3, 1, 1)

    def build(scale: float = 1.0, max_steps: int | None = None):
        pl.seed_everything(seed, verbose=False)
        steps_per_epoch = len(data["x_train"]) // batch
        epochs = math.ceil((max_steps or steps_per_epoch) / steps_per_epoch)
        module = lightly_module(recipe, size, backbone=backbone, batch_size=batch,
                                max_epochs=epochs, total_steps=max_steps or 1000)  # fmt: skip
        collate = None
        if recipe == "ijepa":
            from lightly.data import IJEPAMaskCollator

            collate = IJEPAMaskCollator(input_size=size, patch_size=4)
        loader = torch.utils.data.DataLoader(
            _Views(images, data["y_train"], lightly_transform(recipe, size)),
            batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
            collate_fn=collate, generator=torch.Generator().manual_seed(seed),
            persistent_workers=workers > 0,
        )  # fmt: skip
        return module, loader, "32-true"

    config = f"benchmarks/lightly_recipes.py:{RECIPES[recipe].__name__}"
    if dataset.name != "cifar":
        config += f" ({size} px, gray repeated to 3 channels)"
    return {
        "build": build, "precision": "32-true", "batch": batch, "config_epochs": None,
        "config": config, "overrides": [],
        "features": lambda m: m.features, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    }  # fmt: skip


def run_name(
    side: str,
    method: str,
    rev: str | None,
    sets: dict[str, str] | None = None,
    eval_backbone: str | None = None,
) -> str:
    """``selfsup/simclr``; ``selfsup/simclr@REV`` for its config as committed at REV;
    ``selfsup/simclr[lars_clip=false]`` with options set (each named by its last part);
    ``selfsup/dino[backbone=student]`` evaluated on its student."""
    if side != "selfsup":
        return f"{side}/{method}"
    settings = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in (sets or {}).items()]
    settings += [f"backbone={eval_backbone}"] if eval_backbone else []
    brackets = f"[{','.join(settings)}]" if settings else ""
    return f"{side}/{method}" + (f"@{rev}" if rev else "") + brackets


def check_sets(sets: list[str], names: list[str], rev: str | None) -> dict[str, str] | str:
    """``--set`` as a dict, or the one line that says what is wrong with it: an item
    without ``=``, or an option a run's config does not take (parsed, not instantiated,
    so before the data loads)."""
    from selfsup.errors import ConfigError
    from selfsup.train.run import build_pretrain_cli

    bad = [item for item in sets if "=" not in item or item.startswith("=")]
    if bad:
        return f"--set takes KEY=VALUE, got {bad[0]!r}: e.g. --set model.init_args.lars_clip=false"
    parsed = dict(item.split("=", 1) for item in sets)
    for name in names:
        config = config_file(name.split("/")[1], rev)
        try:
            build_pretrain_cli(["--config", str(config), *set_flags(parsed)], resolve_only=True)
        except ConfigError as e:
            return f"--set for {name}: {e}"
    return parsed


def run(side: str, method: str, seed: int, budget_min: float, points: int, workers: int,
        data: dict, dataset: QualityData, tag: str | None = None,
        rev: str | None = None, matched_steps: int | None = None,
        sets: dict[str, str] | None = None,
        eval_backbone: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One run; ``matched_steps`` trains exactly that many steps (the budget's clock then
    places the marks but does not stop the run) instead of the calibrated count."""
    if side == "selfsup":
        # taken before training: the config as it was when the run read it
        fingerprint = {"config_sha": config_fingerprint(method, rev, sets)}
        spec = selfsup_side(method, seed, workers, data, dataset, rev, sets, eval_backbone)
    else:
        fingerprint, spec = {}, lightly_side(method, seed, workers, data, dataset)
    budget_s = budget_min * 60
    if matched_steps:
        steps, how = matched_steps, "matched to today's config's run"
    else:
        step_s = calibrate(lambda: spec["build"]())
        steps, how = max(1, int(budget_s / step_s)), f"{step_s:.2f} s/step"
    budget_epochs = steps * spec["batch"] / len(data["x_train"])
    scale = budget_epochs / spec["config_epochs"] if spec["config_epochs"] else 1.0
    name = run_name(side, method, rev, sets, eval_backbone if side == "selfsup" else None)
    print(f"  {name} seed {seed}: {how} -> {steps} steps "
          f"({budget_epochs:.2f} epochs) in {budget_min} min", flush=True)  # fmt: skip
    module, loader, precision = spec["build"](scale, steps)
    probe = method in PROBED or dataset.probe_all

    def evaluate_fn(m, final: bool = False):
        return evaluate(spec["features"](m), data, spec["mean"], spec["std"], probe and final)

    budget = Budget(budget_s, points, evaluate_fn, stop=not matched_steps)
    trainer = _trainer(precision, steps, [budget])
    fit(trainer, module, loader)
    budget.point(trainer, module, final=True)
    images_per_s = trainer.global_step * spec["batch"] / budget.train_s
    return {
        "run": name, "side": side, "method": method, "seed": seed,
        "budget_min": budget_min, "config": spec["config"],
        "precision": str(trainer.precision),
        "batch": spec["batch"], "steps": trainer.global_step, "planned_steps": steps,
        "n_train": len(data["x_train"]),
        "epochs": trainer.global_step * spec["batch"] / len(data["x_train"]),
        "images_per_s": images_per_s, "config_epochs": spec["config_epochs"],
        "curve": budget.curve, "final": budget.curve[-1], "moved": budget.moved(module),
        "machine": machine(),
        "data": dataset.name, "tag": tag, "threads": torch.get_num_threads(), "points": points,
        **({"overrides": spec["overrides"]} if spec["overrides"] else {}),
        **({"config_rev": rev} if rev and side == "selfsup" else {}),
        **({"set": sets} if sets and side == "selfsup" else {}),
        **({"eval_backbone": eval_backbone} if eval_backbone and side == "selfsup" else {}),
        **fingerprint,
        **({"matched_steps": True} if matched_steps else {}),
    }  # fmt: skip


def baselines(data: dict, dataset: QualityData, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """kNN and probe references: raw pixels, and untrained backbones of the runs' shapes
    (both ResNet-18 starts: timm's zero-initialised last BatchNorm of each block, and
    torchvision's scale 1, which the ResNet configs take; each ResNet also with BatchNorm
    statistics of the training split), but for the runs in ``skip``.

    The probe figures are what the MAE / I-JEPA probes are read against: a linear probe
    is stronger than kNN on any features, so those runs' probe needs a probe baseline.
    PneumoniaMNIST's are :func:`quality_data.pneumonia_baselines`.
    """
    from selfsup.backbones import Backbone

    skip = set(skip)
    if dataset.name != "cifar":
        out = pneumonia_baselines(data, dataset.size, evaluate, skip)
        # lightly's ResNet-18 as its recipes start: 3 channels, ImageNet normalisation
        lightly_init = {"random_init_lightly_resnet18": (quality_report.LIGHTLY_RANDOM_INIT,
                                                         {"name": "resnet18"})}  # fmt: skip
        for run_name, method, _, data_bn in untrained_variants(lightly_init):
            for seed in () if "baseline/" + run_name in skip else (0, 1):
                torch.manual_seed(seed)
                net = lightly_resnet18()[0].eval()
                if data_bn:
                    with_data_bn_stats(net, data["x_train"], IMAGENET_MEAN, IMAGENET_STD)
                out.append({"run": "baseline/" + run_name, "side": "baseline", "method": method,
                            "seed": seed, "data": dataset.name,
                            "final": evaluate(lambda x, net=net: net(x).flatten(1), data,
                                              IMAGENET_MEAN, IMAGENET_STD, probe=True)})  # fmt: skip
        return out
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
    out = [] if "baseline/raw_pixels" in skip else [
        {"run": "baseline/raw_pixels", "side": "baseline", "method": "raw pixels", "seed": 0,
         "final": evaluate(lambda x: x.flatten(1), data, mean, std, probe=True)}]  # fmt: skip
    untrained = {  # run: (method, backbone of the runs' shape)
        "random_init_resnet18": ("random-init ResNet-18", dict(name="resnet18", cifar_stem=True)),
        "random_init_resnet18_tv": ("random-init ResNet-18, zero_init_last false",
                                    dict(name="resnet18", cifar_stem=True, zero_init_last=False)),
        "random_init_vit_tiny4": ("random-init ViT-Tiny/4", dict(name="vit_tiny", patch_size=4, pool="avg")),
    }  # fmt: skip
    for run_name, method, kwargs, data_bn in untrained_variants(untrained):
        for seed in () if "baseline/" + run_name in skip else (0, 1):
            torch.manual_seed(seed)
            net = Backbone(img_size=32, **kwargs).eval()
            if data_bn:
                with_data_bn_stats(net, data["x_train"], mean, std)
            out.append({"run": "baseline/" + run_name, "side": "baseline", "method": method,
                        "seed": seed, "final": evaluate(net, data, mean, std, probe=True)})  # fmt: skip
    return out


# -- records, table, plot --------------------------------------------------------------------
def load_records() -> list[dict[str, Any]]:
    return json.loads(RECORDS.read_text()) if RECORDS.is_file() else []


def _key(record: dict) -> tuple:
    return record["run"], record["seed"], record.get("budget_min"), record.get("tag") or None


def save_record(records: list[dict], new: dict) -> None:
    """Add ``new`` to the records file, replacing the record of the same run, seed, budget
    and tag; the file is read again first, so that records another process wrote since
    are kept, and replaced in one rename."""
    records[:] = [r for r in load_records() if _key(r) != _key(new)]
    records.append(new)
    partial = RECORDS.with_name(RECORDS.name + ".partial")
    partial.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(partial, RECORDS)


def render(records: list[dict], wanted_seeds: int) -> None:
    # a short-budget recipe joins the main table once it has a run of the main table's group
    ran = {
        r["method"]
        for r in records
        if r["side"] != "baseline" and quality_report.group_of(r) == REFERENCE
    }
    methods = {**METHODS, **{m: v for m, v in SMALL.items() if m in ran}}
    body = quality_report.cifar_section(records, wanted_seeds, methods, REFERENCE, PLOT, K, T,
                                        machine())  # fmt: skip
    write_section("Learning per CPU-minute (`quality`)", body)


def render_pneumonia(records: list[dict], wanted_seeds: int) -> None:
    expected = [f"selfsup/{m}" for m in METHODS]
    expected += [f"lightly/{c}" for c in dict.fromkeys(c for _, c in METHODS.values())]
    order = [m for method in METHODS for m in (method, f"{method}_small")]
    counterparts = {m: lightly for m, (_, lightly) in {**METHODS, **SMALL}.items()}
    body = quality_report.pneumonia_section(records, wanted_seeds, order, counterparts,
                                            expected, PLOT, K, T, machine())  # fmt: skip
    write_section(quality_report.PNEUMONIA_HEADING, body)


def _pick(values: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` of ``values`` at seeded random positions (the same for a split's x and y)."""
    order = torch.randperm(len(values), generator=torch.Generator().manual_seed(0))
    return values[order[:n].sort().values]


def main() -> int:
    global RECORDS, PLOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="e.g. selfsup/simclr lightly/simclr")
    parser.add_argument("--data", choices=sorted(DATASETS), default="cifar",
                        help="cifar10_jpeg.npz (cifar) or pneumoniamnist.npz (pneumonia)")  # fmt: skip
    parser.add_argument("--budget-min", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--points", type=int, default=3, help="kNN evaluations per run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="add the baselines not yet recorded (with --force: all again)",
    )
    parser.add_argument("--tag", default=None,
                        help="stored in each record: runs with another tag (or none) are kept "
                        "and shown apart, e.g. after-config-fix")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own); recorded")  # fmt: skip
    parser.add_argument("--before", metavar="REV", default=None,
                        help="selfsup's runs take their config as committed at git revision "
                        "REV (e.g. 6ad51ce^, before the config fixes) and are recorded as "
                        "selfsup/METHOD@REV, beside the current configs' runs of the same "
                        "budget and tag: a before/after on one machine")  # fmt: skip
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="sets",
                        help="selfsup's runs with these `selfsup pretrain` options changed "
                        "(e.g. model.init_args.lars_clip=false), recorded as "
                        "selfsup/METHOD[lars_clip=false] beside today's config: one factor "
                        "at a time")  # fmt: skip
    parser.add_argument("--match-steps", action="store_true",
                        help="with --before or --set: each run trains the steps of today's config's "
                        "recorded run of the same budget, seed and tag, rather than the "
                        "count a few calibration steps give (on a shared host their noise "
                        "gave the two sides of a before/after 20-30 %% different step "
                        "counts for the same step time)")  # fmt: skip
    parser.add_argument("--eval-backbone", choices=["student", "teacher"], default=None,
                        help="selfsup's runs are evaluated on this backbone rather than the "
                        "method's own choice (DINO, I-JEPA: teacher), recorded as "
                        "selfsup/dino[backbone=student]; with --match-steps beside the "
                        "method's own run of the same seed and steps")  # fmt: skip
    parser.add_argument("--render", action="store_true", help="only redraw from the records")
    parser.add_argument("--force", action="store_true", help="rerun recorded runs")
    parser.add_argument("--limit-data", type=int, default=0,
                        help="a quick check of the script: N training and N test images "
                        "(a seeded random pick: PneumoniaMNIST's are sorted by class), "
                        "records to --records")  # fmt: skip
    parser.add_argument("--records", type=Path, default=None,
                        help="default: benchmarks/quality_runs.json, or "
                        "quality_pneumonia_runs.json with --data pneumonia")  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DATASETS[args.data]
    RECORDS, PLOT = OUTPUTS[args.data]
    if args.records is not None and args.records != RECORDS:
        # a check run writes beside its records, not to RESULTS.md
        RECORDS, PLOT = args.records, args.records.with_suffix(".png")
        common.RESULTS = args.records.with_suffix(".md")
    known = [f"selfsup/{m}" for m in {**METHODS, **SMALL}] + [f"lightly/{m}" for m in METHODS]
    unknown = [name for name in args.runs if name not in known]
    if unknown:
        print(f"quality: no run named {unknown[0]}; the runs are {' '.join(known)}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.before:  # a revision without a config stops here, before the data loads
        for name in args.runs:
            if name.startswith("selfsup/"):
                config_text(name.split("/")[1], args.before)
    sets: dict[str, str] = {}
    if args.sets and not any(n.startswith("selfsup/") for n in args.runs):
        print("quality: --set changes selfsup's configs, and no selfsup/ run is given: add "
              "one to --runs (lightly's recipes take no --set)", file=sys.stderr)  # fmt: skip
        return 2
    if args.sets:  # a malformed or unknown option stops here, before the data loads
        checked = check_sets(args.sets, [n for n in args.runs if n.startswith("selfsup/")],
                             args.before)  # fmt: skip
        if isinstance(checked, str):
            print(f"quality: {checked}", file=sys.stderr)
            return 2
        sets = checked
    if args.eval_backbone and not any(n.startswith("selfsup/") for n in args.runs):
        print("quality: --eval-backbone picks the backbone selfsup's runs are evaluated on, and "
              "no selfsup/ run is given: add one to --runs (lightly's recipes read their "
              "student)", file=sys.stderr)  # fmt: skip
        return 2
    if args.eval_backbone == "teacher":
        no_teacher = [n for n in args.runs if n.startswith("selfsup/")
                      and not has_teacher(n.split("/")[1], args.before)]  # fmt: skip
        if no_teacher:
            teachers = ", ".join(m for m in sorted(METHODS) if has_teacher(m))
            print(f"quality: {no_teacher[0]} has no teacher to evaluate: --eval-backbone teacher "
                  f"is for {teachers}", file=sys.stderr)  # fmt: skip
            return 2
    tag = args.tag or None
    records = load_records()
    matched: dict[tuple[str, int], int] = {}
    if args.match_steps:  # stops here, before the data loads, when there is nothing to match
        if not (args.before or sets or args.eval_backbone):
            print("quality: --match-steps matches a variant's runs to today's config's: add "
                  "--before REV, --set KEY=VALUE or --eval-backbone", file=sys.stderr)  # fmt: skip
            return 2
        for name in (n for n in args.runs if n.startswith("selfsup/")):
            for seed in range(args.seeds):
                today = [r for r in records if _key(r) == (name, seed, args.budget_min, tag)]
                if not today:
                    where = f"tag {tag}" if tag else "no tag"
                    print(f"quality: --match-steps: no recorded run of {name} seed {seed} at "
                          f"{args.budget_min:g} min, {where}, to match; run it first "
                          "without --before or --set", file=sys.stderr)  # fmt: skip
                    return 2
                matched[name, seed] = today[0]["steps"]
    show = render if dataset.name == "cifar" else render_pneumonia
    data = dataset.load() if (args.runs or args.baselines) else {}
    if args.limit_data:
        data = {k: _pick(v, args.limit_data) if torch.is_tensor(v) else v for k, v in data.items()}
    if args.baselines:  # the ones not yet recorded; --force: all again
        recorded = set() if args.force else {r["run"] for r in records if r["side"] == "baseline"}
        for record in baselines(data, dataset, recorded):
            save_record(records, record)
            print(record["run"], record["final"], flush=True)
    for seed in range(args.seeds):
        for name in args.runs:
            side, method = name.split("/")
            key = (run_name(side, method, args.before, sets, args.eval_backbone), seed,
                   args.budget_min, tag)  # fmt: skip
            recorded = [r for r in load_records() if _key(r) == key]
            if recorded and not args.force:
                sha = recorded[0].get("config_sha")
                if (
                    side == "selfsup"
                    and sha
                    and sha != config_fingerprint(method, args.before, sets)
                ):
                    print(f"quality: {key[0]} seed {seed} is recorded from another version of "
                          f"its config (fingerprint {sha}); not rerun: give a new --tag, or "
                          "--force to replace the record", file=sys.stderr)  # fmt: skip
                continue
            record = run(side, method, seed, args.budget_min, args.points, args.workers, data,
                         dataset, tag, args.before, matched.get((name, seed)), sets,
                         args.eval_backbone)  # fmt: skip
            save_record(records, record)
            show(records, WANTED_SEEDS)
    show(load_records(), WANTED_SEEDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
