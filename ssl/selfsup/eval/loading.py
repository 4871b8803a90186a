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
from selfsup.train.rundir import resolve_checkpoint
from selfsup.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform


@dataclass
class LoadedBackbone:
    backbone: Backbone
    meta: dict[str, Any]
    path: str

    @property
    def mean(self) -> list[float]:
        return list(self.meta.get("mean") or IMAGENET_MEAN)

    @property
    def std(self) -> list[float]:
        return list(self.meta.get("std") or IMAGENET_STD)

    def eval_transform(self) -> EvalTransform:
        return EvalTransform(int(self.meta["image_size"]), self.mean, self.std)


def load_backbone(
    ckpt: str | os.PathLike,
    which: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
    overrides: dict[str, Any] | None = None,
    timm_model: str | None = None,
) -> LoadedBackbone:
    """Backbone (eval mode) of a selfsup checkpoint file, run directory or backbone export,
    or of a timm model's local weights file.

    Args:
        which: ``student`` or ``teacher`` weights (default: the method's own choice).
        pool: ViTs: ``cls`` or ``avg`` pooling (default: the method's own choice).
        overrides: backbone kwargs that do not change the weights (``drop_path_rate``).
        timm_model: ``ckpt`` is a weights file (``.safetensors``, ``.pth``, ``.bin``) of
            this timm ResNet or ViT (e.g. ``vit_small_patch16_224``), not a selfsup file.
    """
    if timm_model is not None:
        return _load_timm_weights(timm_model, ckpt, which, pool, overrides)
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


def _load_timm_weights(
    name: str,
    path: str | os.PathLike,
    which: str | None,
    pool: Literal["cls", "avg"] | None,
    overrides: dict[str, Any] | None = None,
) -> LoadedBackbone:
    """A timm architecture with a local weights file (a timm/Hugging Face checkpoint,
    possibly nested under ``state_dict``/``model``); normalisation and input size are
    the ones timm records for that architecture."""
    from timm.models import load_state_dict

    if not os.path.isfile(path):
        raise ConfigError(f"Weights file {path} for --timm-model {name} does not exist.")
    if which is not None:
        raise ConfigError(f"{path} holds one backbone: drop --backbone {which}.")
    kwargs = {**(overrides or {})}
    probe = build_backbone(name, **kwargs)  # validates the name, gives timm's default config
    cfg = probe.model.pretrained_cfg
    image_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    kwargs["img_size"] = image_size
    if pool is not None:
        kwargs["pool"] = pool
    backbone = build_backbone(name, **kwargs)
    state = load_state_dict(str(path))
    # timm checkpoints carry their classifier; the backbone has none (num_classes=0).
    heads = cfg.get("classifier") or ()
    for head in [heads] if isinstance(heads, str) else heads:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    if backbone.is_vit:
        # timm's own conversion: resamples position embeddings to this image size.
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, backbone.model)
    # strict: a file of another architecture (or with a prefix such as "module." or
    # "backbone.") must fail here, not load nothing and evaluate random weights.
    result = backbone.model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"{path} does not hold {name} weights: missing {list(result.missing_keys)[:4]}, "
            f"unexpected {list(result.unexpected_keys)[:4]}. Give the timm name the file was "
            "saved from (its keys must match timm's, without a prefix)."
        )
    meta = {
        "method": "timm",
        "backbone": name,
        "backbone_kwargs": kwargs,
        "image_size": image_size,
        "in_chans": backbone.in_chans,
        "mean": list(cfg.get("mean", IMAGENET_MEAN)),
        "std": list(cfg.get("std", IMAGENET_STD)),
        "eval_backbone": "weights",
        "loaded": "weights",
        "pool": backbone.pool,
    }
    return LoadedBackbone(backbone.eval(), meta, str(path))
