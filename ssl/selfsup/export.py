"""Backbone export: the weights as safetensors, everything needed to rebuild them in its metadata.

For architectures timm builds as they are (ViTs, standard ResNets) the file loads
into plain timm::

    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}
    model = timm.create_model(meta["timm_name"], **json.loads(meta["timm_kwargs"]))
    model.load_state_dict(weights, strict=True)

and for every architecture (a CIFAR-stem ResNet too) ``selfsup.export.load_export(path)``
rebuilds the selfsup :class:`~selfsup.backbones.Backbone`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import selfsup
from selfsup.backbones import Backbone, build_backbone
from selfsup.errors import ConfigError

FORMAT = "selfsup-backbone-1"


def export_metadata(backbone: Backbone, meta: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata (strings only) for ``backbone`` loaded with checkpoint ``meta``."""
    kwargs = dict(meta["backbone_kwargs"])
    kwargs["pool"] = backbone.pool
    return {
        "format": FORMAT,
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
    which: str | None = None,
    pool: str | None = None,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint (or run directory) to ``out`` (.safetensors)."""
    from selfsup.eval.loading import load_backbone

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
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a selfsup backbone export (no '{FORMAT}' metadata).")
        return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (not iterable)


def load_export(path: str | os.PathLike) -> Backbone:
    """The selfsup Backbone of an export, weights loaded strictly, in eval mode."""
    weights, meta = read_export(path)
    backbone = build_backbone(meta["backbone"], **json.loads(meta["backbone_kwargs"]))
    backbone.model.load_state_dict(weights, strict=True)
    return backbone.eval()
