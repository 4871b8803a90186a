"""One loader from any selfsup checkpoint to a backbone, driven by the checkpoint's own metadata.

It never imports a method: the metadata (written by the methods' shared base)
names the backbone, its kwargs, normalisation, pooling, and which weights are
the student's and the teacher's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from selfsup.backbones import Backbone, build_backbone
from selfsup.errors import ConfigError
from selfsup.rundir import resolve_checkpoint
from selfsup.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform


@dataclass
class LoadedBackbone:
    backbone: Backbone
    meta: dict[str, Any]
    path: str

    def eval_transform(self) -> EvalTransform:
        mean = self.meta.get("mean") or IMAGENET_MEAN
        std = self.meta.get("std") or IMAGENET_STD
        return EvalTransform(int(self.meta["image_size"]), mean, std)


def load_backbone(
    ckpt: str | os.PathLike,
    which: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
    overrides: dict[str, Any] | None = None,
) -> LoadedBackbone:
    """Backbone (eval mode) of a selfsup checkpoint file, run directory or backbone export.

    Args:
        which: ``student`` or ``teacher`` weights (default: the method's own choice).
        pool: ViTs: ``cls`` or ``avg`` pooling (default: the method's own choice).
        overrides: backbone kwargs that do not change the weights (``drop_path_rate``).
    """
    if str(ckpt).endswith(".safetensors"):
        return _load_export(ckpt, which, pool, overrides)
    path = resolve_checkpoint(ckpt)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint.get("selfsup")
    if meta is None:
        raise ConfigError(
            f"{path} has no selfsup metadata: is it a checkpoint written by selfsup pretrain?"
        )
    which = which or meta["eval_backbone"]
    prefix = meta["teacher_prefix"] if which == "teacher" else meta["student_prefix"]
    if prefix is None:
        raise ConfigError(f"{meta['method']} has no teacher: use --backbone student.")
    kwargs = {**meta["backbone_kwargs"], **(overrides or {})}
    if pool is not None:
        kwargs["pool"] = pool
    backbone = build_backbone(meta["backbone"], **kwargs)
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    backbone.load_state_dict(state, strict=True)
    meta = {**meta, "loaded": which, "pool": backbone.pool}
    return LoadedBackbone(backbone.eval(), meta, str(path))


def _load_export(
    path: str | os.PathLike,
    which: str | None,
    pool: Literal["cls", "avg"] | None,
    overrides: dict[str, Any] | None = None,
) -> LoadedBackbone:
    from selfsup.export import read_export

    if not os.path.isfile(path):
        raise ConfigError(f"Backbone export {path} does not exist.")
    weights, file_meta = read_export(path)
    if which is not None and which != file_meta["weights"]:
        raise ConfigError(
            f"{path} holds the {file_meta['weights']} backbone only: drop --backbone {which}."
        )
    kwargs = {**json.loads(file_meta["backbone_kwargs"]), **(overrides or {})}
    if pool is not None:
        kwargs["pool"] = pool
    backbone = build_backbone(file_meta["backbone"], **kwargs)
    backbone.model.load_state_dict(weights, strict=True)
    meta = {
        "method": file_meta["method"],
        "backbone": file_meta["backbone"],
        "backbone_kwargs": kwargs,
        "image_size": int(file_meta["image_size"]),
        "in_chans": int(file_meta["in_chans"]),
        "mean": json.loads(file_meta["mean"]),
        "std": json.loads(file_meta["std"]),
        "eval_backbone": file_meta["weights"],
        "loaded": file_meta["weights"],
        "pool": backbone.pool,
    }
    return LoadedBackbone(backbone.eval(), meta, str(path))
