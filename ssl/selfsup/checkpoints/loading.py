"""Every format into a backbone: :func:`load_backbone` builds the backbone of a selfsup
checkpoint (student or teacher) or run directory, a selfsup export, a timm hub folder, a
timm pretrained tag or a timm weights file, from the file's own metadata. It never imports
a method: the metadata written by the methods' shared base names the backbone, its kwargs,
normalisation, pooling, and which weights are the student's and the teacher's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open

from selfsup.backbones import Backbone, build_backbone
from selfsup.checkpoints.files import read_checkpoint, resolve_checkpoint
from selfsup.checkpoints.weights import (
    TAG_PREFIX,
    Weights,
    hub_folder,
    read_hub_folder,
    read_timm_tag,
    read_weights_file,
)
from selfsup.errors import ConfigError
from selfsup.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform

EXPORT_FORMAT = "selfsup-backbone-1"


@dataclass
class LoadedBackbone:
    backbone: Backbone
    meta: dict[str, Any]
    path: str

    @property
    def mean(self) -> list[float]:
        return self._per_channel(self.meta.get("mean"), IMAGENET_MEAN)

    @property
    def std(self) -> list[float]:
        return self._per_channel(self.meta.get("std"), IMAGENET_STD)

    def _per_channel(self, recorded: Any, default: tuple[float, ...]) -> list[float]:
        """The recorded normalisation, else ImageNet's for the backbone's channels (its
        channel mean for a gray backbone: three values would broadcast one channel to three)."""
        if recorded:
            return list(recorded)
        channels = int(self.meta.get("in_chans") or len(default))
        if channels == len(default):
            return list(default)
        return [sum(default) / len(default)] * channels

    def eval_transform(self) -> EvalTransform:
        channels = self.meta.get("in_chans")
        return EvalTransform(int(self.meta["image_size"]), self.mean, self.std,
                             channels=int(channels) if channels else None)  # fmt: skip


def load_backbone(
    ckpt: str | os.PathLike,
    which: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
    overrides: dict[str, Any] | None = None,
    timm_model: str | None = None,
) -> LoadedBackbone:
    """Backbone (eval mode) of anything ``init_from`` accepts: a selfsup checkpoint file,
    run directory or backbone export, a timm hub folder, a timm pretrained tag
    (``timm:<name>.<tag>``), or a weights file of the timm model ``timm_model``.

    Args:
        which: ``student`` or ``teacher`` weights (default: the method's own choice).
        pool: ViTs: ``cls`` or ``avg`` pooling (default: the method's own choice).
        overrides: backbone kwargs that do not change the weights (``drop_path_rate``).
        timm_model: ``ckpt`` is a weights file (``.safetensors``, ``.pth``, ``.bin``) of
            this timm ResNet or ViT (e.g. ``vit_small_patch16_224``), not a selfsup file.
    """
    what = f"--ckpt {ckpt}"
    if timm_model is not None:
        if not os.path.isfile(ckpt):
            raise ConfigError(f"Weights file {ckpt} for --timm_model {timm_model} does not exist.")
        weights = read_weights_file(Path(ckpt), what)
        return _timm_backbone(timm_model, {}, weights, which, pool, overrides)
    if str(ckpt).startswith(TAG_PREFIX):
        name = str(ckpt)[len(TAG_PREFIX) :].split(".")[0]
        weights = read_timm_tag(str(ckpt), what, f"--ckpt w.pth --timm_model {name}")
        return _timm_backbone(str(weights.architecture), {}, weights, which, pool, overrides)
    folder = hub_folder(ckpt)
    if folder is not None:
        return _load_hub_folder(read_hub_folder(folder, what), which, pool, overrides)
    if str(ckpt).endswith(".safetensors"):
        return _load_export(ckpt, which, pool, overrides)
    path = resolve_checkpoint(ckpt)
    checkpoint = read_checkpoint(path)
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
    meta = {**meta, "loaded": which, "pool": backbone.pool, "in_chans": backbone.in_chans}
    return LoadedBackbone(backbone.eval(), meta, str(path))


def _load_export(
    path: str | os.PathLike,
    which: str | None,
    pool: Literal["cls", "avg"] | None,
    overrides: dict[str, Any] | None = None,
) -> LoadedBackbone:
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


def _timm_backbone(
    name: str,
    kwargs: dict[str, Any],
    weights: Weights,
    which: str | None,
    pool: Literal["cls", "avg"] | None,
    overrides: dict[str, Any] | None,
) -> LoadedBackbone:
    """A timm architecture with weights in timm's keys; normalisation and input size are
    the ones recorded with the weights, else timm's for that architecture."""
    path = weights.file or name
    if which is not None:
        raise ConfigError(f"{path} holds one backbone: drop --backbone {which}.")
    kwargs = {**kwargs, **(overrides or {})}
    probe = build_backbone(name, **kwargs)  # validates the name, gives timm's default config
    cfg = {**probe.model.pretrained_cfg, **weights.pretrained_cfg}
    image_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    kwargs.setdefault("img_size", image_size)
    if pool is not None:
        kwargs["pool"] = pool
    backbone = build_backbone(name, **kwargs)
    state = weights.state
    # timm checkpoints carry their classifier; the backbone has none (num_classes=0).
    heads = cfg.get("classifier") or ()
    for head in [heads] if isinstance(heads, str) else heads:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    if backbone.is_vit:
        # timm's own conversion: resamples position embeddings to this image size.
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, backbone.model)
    # strict: a file of another architecture (or with an unknown prefix) must fail here,
    # not load nothing and evaluate random weights.
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
    return LoadedBackbone(backbone.eval(), meta, path)


def _load_hub_folder(
    weights: Weights,
    which: str | None,
    pool: Literal["cls", "avg"] | None,
    overrides: dict[str, Any] | None,
) -> LoadedBackbone:
    """A timm hub folder: selfsup's own export is rebuilt from its provenance (backbone
    name and kwargs), any other one as its timm architecture at its input size."""
    cfg = weights.pretrained_cfg
    size = cfg.get("input_size")
    provenance = weights.provenance
    if not provenance:
        if not weights.architecture:
            raise ConfigError(f"{Path(str(weights.file)).parent}/config.json names no architecture: "
                              "give a folder that timm's save_for_hf or selfsup export wrote.")  # fmt: skip
        kwargs = {"img_size": int(size[-1]), "in_chans": int(size[0])} if size else {}
        return _timm_backbone(weights.architecture, kwargs, weights, which, pool, overrides)
    if which is not None and which != provenance.get("weights"):
        raise ConfigError(f"{weights.file} holds the {provenance.get('weights')} backbone only: "
                          f"drop --backbone {which}.")  # fmt: skip
    kwargs = {**provenance["backbone_kwargs"], **(overrides or {})}
    if pool is not None:
        kwargs["pool"] = pool
    backbone = build_backbone(provenance["backbone"], **kwargs)
    backbone.model.load_state_dict(weights.state, strict=True)
    meta = {
        "method": provenance.get("method"),
        "backbone": provenance["backbone"],
        "backbone_kwargs": kwargs,
        "image_size": int(provenance["image_size"]),
        "in_chans": backbone.in_chans,
        "mean": list(cfg.get("mean", IMAGENET_MEAN)),
        "std": list(cfg.get("std", IMAGENET_STD)),
        "eval_backbone": provenance.get("weights"),
        "loaded": provenance.get("weights"),
        "pool": backbone.pool,
    }
    return LoadedBackbone(backbone.eval(), meta, str(weights.file))


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a backbone file written by ``selfsup export``."""
    if not str(path).endswith(".safetensors"):
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format", "").startswith("selfsup-backbone")
    except (SafetensorError, OSError):
        return False


def read_export(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata of an exported backbone file."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != EXPORT_FORMAT:
                raise ConfigError(
                    f"{path} is not a selfsup backbone export (no '{EXPORT_FORMAT}' metadata)."
                )
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{path} cannot be read as a safetensors file ({e}).") from None


def load_export(path: str | os.PathLike) -> Backbone:
    """The selfsup Backbone of an export, weights loaded strictly, in eval mode."""
    weights, meta = read_export(path)
    backbone = build_backbone(meta["backbone"], **json.loads(meta["backbone_kwargs"]))
    backbone.model.load_state_dict(weights, strict=True)
    return backbone.eval()
