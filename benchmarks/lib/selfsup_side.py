"""selfsup's side of a quality run: a method's config as it is now or as committed at a
revision, with ``--set`` options, on 1-channel images, its fingerprint, and the build of
its run as ``selfsup pretrain`` would build it (:func:`spec`)."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from .budget import compress_schedule
from .common import REPO, committed_text
from .methods import METHODS, SMALL
from .quality_data import GRAY_MEAN, GRAY_STD, QualityData
from .quality_data import selfsup_overrides as gray_overrides
from .records import fingerprint


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
    """:func:`records.fingerprint` of ``method``'s config (at ``rev``, or as it is
    now) and its ``--set`` options. Records keep it, so that a config edited since a run
    is not taken for the config that run trained."""
    return fingerprint(config_text(method, rev), sets)


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


def spec(method: str, seed: int, workers: int, data: dict, dataset: QualityData,
         rev: str | None = None, sets: dict[str, str] | None = None,
         eval_backbone: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A run of selfsup's config of ``method``: ``build(scale, max_steps)`` -> (model,
    DataModule, precision) as ``selfsup pretrain`` builds them, the schedule times
    ``scale``; its precision, batch, the config's epochs and name, the 1-channel
    overrides, what it is evaluated on (``features``) and the normalisation."""
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
