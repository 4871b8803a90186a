"""A backbone out as one ``.safetensors`` file, with what rebuilds it in the metadata.

For architectures timm builds as they are (ViTs, standard ResNets) the file loads into
plain timm::

    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}
    model = timm.create_model(meta["timm_name"], **json.loads(meta["timm_kwargs"]))
    model.load_state_dict(weights, strict=True)

and for every architecture (a CIFAR-stem ResNet too)
:func:`~selfsup.checkpoints.loading.load_export` rebuilds the selfsup
:class:`~selfsup.backbones.Backbone`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import save_file

import selfsup
from selfsup.backbones import Backbone
from selfsup.checkpoints.loading import EXPORT_FORMAT, load_backbone
from selfsup.errors import ConfigError


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
