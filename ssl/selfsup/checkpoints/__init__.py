"""Every weight format in and out: checkpoints, run directories, exports, timm weights files.

In: :func:`resolve_checkpoint` turns a ``CKPT`` argument (a checkpoint file or a run
directory) into a file; :func:`read_checkpoint` reads one (a truncated or foreign file is
a one-line error, never a traceback); :func:`load_backbone` builds the backbone of any
of them from the file's own metadata — a selfsup checkpoint (student or teacher), a
selfsup export, or a timm model's weights file. It never imports a method: the metadata
written by the methods' shared base names the backbone, its kwargs, normalisation,
pooling, and which weights are the student's and the teacher's.

Out: :func:`export_backbone` writes the backbone as safetensors with what rebuilds it in
the metadata. For architectures timm builds as they are (ViTs, standard ResNets) the file
loads into plain timm::

    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}
    model = timm.create_model(meta["timm_name"], **json.loads(meta["timm_kwargs"]))
    model.load_state_dict(weights, strict=True)

and for every architecture (a CIFAR-stem ResNet too) :func:`load_export` rebuilds the
selfsup :class:`~selfsup.backbones.Backbone`.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import selfsup
from selfsup.backbones import Backbone, build_backbone
from selfsup.errors import ConfigError
from selfsup.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
EXPORT_FORMAT = "selfsup-backbone-1"

#: What torch.load raises for a file that is not a whole torch checkpoint.
_UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
               ValueError, KeyError, AttributeError)  # fmt: skip


# --------------------------------------------------------------------------- files
def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """A selfsup/Lightning checkpoint file as a dict (tensors on the CPU, plain types only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        raise ConfigError(
            f"{path} is a backbone export (.safetensors), not a training checkpoint: "
            "resume from a .ckpt file or a run directory."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _UNREADABLE as e:
        raise ConfigError(
            f"{path} cannot be read as a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'}): it is truncated or not "
            "a checkpoint; pass another file or the run directory."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint.")
    return checkpoint


def _global_step(path: Path) -> int:
    """A checkpoint's global step; -1 (with a warning) for a file that does not load."""
    try:
        return int(read_checkpoint(path, mmap=True).get("global_step", -1))
    except ConfigError as e:  # a truncated file from an older, non-atomic write
        warnings.warn(f"Skipping an unreadable checkpoint: {e}", stacklevel=2)
        return -1


def newest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a restart continues from: the highest global step among
    ``last.ckpt`` and Lightning's ``hpc_ckpt_*.ckpt`` in the run directory."""
    run_dir = Path(run_dir)
    candidates = [
        p
        for p in [run_dir / CHECKPOINT_DIR / LAST, *run_dir.glob("hpc_ckpt_*.ckpt")]
        if p.is_file()
    ]
    if not candidates:
        return None
    steps = {p: _global_step(p) for p in candidates}
    best = max(candidates, key=lambda p: steps[p])
    if steps[best] < 0:
        raise ConfigError(
            f"{run_dir} has checkpoints but none of them loads ({', '.join(map(str, candidates))}): "
            "move them aside to start afresh, or pass --resume PATH."
        )
    return best


def resolve_checkpoint(ckpt: str | os.PathLike) -> Path:
    """``CKPT`` argument -> a checkpoint file: a file as is, a run directory's newest checkpoint."""
    path = Path(ckpt).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = newest_checkpoint(path)
        if found is None:
            raise ConfigError(
                f"{path} is a directory without checkpoints ({CHECKPOINT_DIR}/{LAST}): is it a selfsup run directory?"
            )
        return found
    raise ConfigError(f"Checkpoint {ckpt!r} does not exist: pass a .ckpt file or a run directory.")


# --------------------------------------------------------------------------- backbones in
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
    meta = {**meta, "loaded": which, "pool": backbone.pool}
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
    try:
        state = load_state_dict(str(path))
    except (*_UNREADABLE, SafetensorError) as e:
        raise ConfigError(
            f"{path} cannot be read as a weights file ({type(e).__name__})."
        ) from None
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


# --------------------------------------------------------------------------- exports out
def export_metadata(backbone: Backbone, meta: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata (strings only) for ``backbone`` loaded with checkpoint ``meta``."""
    kwargs = dict(meta["backbone_kwargs"])
    kwargs["pool"] = backbone.pool
    return {
        "format": EXPORT_FORMAT,
        "selfsup_version": selfsup.__version__,
        "backbone": backbone.name,
        "backbone_kwargs": json.dumps(kwargs),
        "timm_name": backbone.timm_name,
        "timm_kwargs": json.dumps(backbone.timm_kwargs),
        "timm_buildable": json.dumps(backbone.timm_buildable),
        "image_size": str(meta["image_size"]),
        "in_chans": str(backbone.in_chans),
        "mean": json.dumps(meta.get("mean")),
        "std": json.dumps(meta.get("std")),
        "pool": backbone.pool,
        "embed_dim": str(backbone.embed_dim),
        "method": str(meta.get("method")),
        "weights": str(meta.get("loaded")),
    }


def export_backbone(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    which: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint (or run directory) to ``out`` (.safetensors)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: give a .safetensors file name.")
    loaded = load_backbone(ckpt, which, pool)
    backbone = loaded.backbone
    # contiguous copies: safetensors refuses tensors that share memory or are views.
    weights = {k: v.detach().contiguous().clone() for k, v in backbone.model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out), metadata=export_metadata(backbone, loaded.meta))
    return {
        "task": "export",
        "file": str(out),
        "backbone": backbone.name,
        "timm_name": backbone.timm_name,
        "timm_buildable": backbone.timm_buildable,
        "weights": loaded.meta["loaded"],
        "pool": backbone.pool,
        "checkpoint": loaded.path,
    }


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
