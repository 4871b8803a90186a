"""Where a run's starting weights come from (``init_from``): a selfsup checkpoint, run
directory or export, or anything :mod:`selfsup.checkpoints.weights` reads (a weights file,
a timm hub folder, a timm pretrained tag); read into timm's keys, fitted to the run's
backbone (:mod:`selfsup.checkpoints.adapt`), with the source, its sha256 and its
normalisation.

A selfsup checkpoint or run directory gives its evaluated backbone (the teacher for DINO
and I-JEPA), with the run's normalisation; a selfsup export (``.safetensors``) its backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfsup.checkpoints.files import resolve_checkpoint
from selfsup.checkpoints.loading import is_export, load_backbone
from selfsup.checkpoints.weights import (
    HUB_PREFIX,
    TAG_PREFIX,
    WEIGHT_SUFFIXES,
    hub_folder,
    read_hub_folder,
    read_timm_tag,
    read_weights_file,
    sha256_of,
    unwrap_state_dict,
)
from selfsup.errors import ConfigError

__all__ = ["InitPlan", "InitSource", "plan_init", "read_init_source", "unwrap_state_dict"]


@dataclass
class InitSource:
    """Weights in timm's keys and where they came from.

    ``source``: the ``init_from`` text; ``file``: the file read (None for a timm tag
    served from memory); ``sha256`` of that file; ``mean``/``std``: the normalisation the
    weights were trained with, where the source records it; ``notes``: one line each on
    what reading did (a nesting level taken, prefixes stripped, keys dropped);
    ``classifier``: key prefixes of a classification head to drop."""

    state: dict[str, torch.Tensor]
    source: str
    file: str | None = None
    sha256: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    notes: list[str] = field(default_factory=list)
    classifier: tuple[str, ...] = ("head.", "fc.", "head_dist.")

    def record(self) -> dict[str, Any]:
        """Plain types for checkpoint metadata."""
        return {"source": self.source, "file": self.file, "sha256": self.sha256,
                "mean": self.mean, "std": self.std}  # fmt: skip


def read_init_source(spec: str) -> InitSource:
    """Read ``spec`` (see the module doc) into timm's keys; one-line errors."""
    what = f"init_from {spec}"
    if spec.startswith(TAG_PREFIX):
        return _from_weights(spec, read_timm_tag(spec, what))
    folder = hub_folder(spec)
    if folder is not None:
        return _from_weights(spec, read_hub_folder(folder, what))
    path = Path(spec[len(HUB_PREFIX) :] if spec.startswith(HUB_PREFIX) else spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{what}: no such file or directory. Give a weights file "
            "(.safetensors, .pth, .bin), a selfsup checkpoint, export or run directory, a "
            "timm hub directory, or a timm tag such as timm:vit_small_patch16_224.augreg_in21k."
        )
    if path.is_dir() or path.suffix == ".ckpt" or is_export(path):
        return _selfsup_file(spec, path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(f"{what}: give a {', '.join(WEIGHT_SUFFIXES)} file or a directory.")
    return _from_weights(spec, read_weights_file(path, what))


def _from_weights(spec: str, weights: Any) -> InitSource:
    cfg = weights.pretrained_cfg
    mean, std = cfg.get("mean"), cfg.get("std")
    return InitSource(weights.state, spec, weights.file,
                      sha256_of(weights.file) if weights.file else None,
                      list(mean) if mean else None, list(std) if std else None,
                      weights.notes)  # fmt: skip


def _selfsup_file(spec: str, path: Path) -> InitSource:
    loaded = load_backbone(path)
    file = path if path.suffix == ".safetensors" else resolve_checkpoint(path)
    state = {k: v.detach().clone() for k, v in loaded.backbone.model.state_dict().items()}
    what = f"the {loaded.meta['loaded']} backbone of {loaded.meta.get('method')}"
    return InitSource(state, spec, str(file), sha256_of(file), loaded.meta.get("mean"),
                      loaded.meta.get("std"), [f"read {what} from {file}"])  # fmt: skip


@dataclass
class InitPlan:
    """Weights read and fitted to a backbone, ready to load (``adapted.state``)."""

    source: InitSource
    adapted: Any  # selfsup.checkpoints.adapt.Adapted

    def lines(self) -> list[str]:
        """What a run's summary says about its starting weights, one line each."""
        digest = f" (sha256 {self.source.sha256[:12]})" if self.source.sha256 else ""
        out = [f"weights from {self.source.source}{digest}", *self.source.notes,
               *self.adapted.changes]  # fmt: skip
        a = self.adapted
        if not a.fits:
            from selfsup.checkpoints.adapt import summarise_keys

            out.append(f"not loaded (init_strict false): missing {summarise_keys(a.missing)}; "
                       f"unexpected {summarise_keys(a.unexpected)}; shapes {a.shapes[:3] or 'none'}")  # fmt: skip
        return out

    def mismatch_report(self) -> str:
        """Every key that did not fit, one per line (kept in the run directory)."""
        a = self.adapted
        parts = [f"missing (start fresh): {k}" for k in a.missing]
        parts += [f"unexpected (ignored): {k}" for k in a.unexpected]
        parts += [f"shape (start fresh): {s}" for s in a.shapes]
        return "\n".join(parts) + "\n"


def plan_init(spec: str, model: torch.nn.Module, strict: bool = True) -> InitPlan:
    """Read ``spec`` and fit it to ``model`` (a timm ViT or ResNet); with ``strict``, keys
    that still do not fit stop here with one line listing them."""
    from selfsup.checkpoints.adapt import adapt_state_dict, summarise_keys

    source = read_init_source(spec)
    adapted = adapt_state_dict(source.state, model, source.classifier)
    if strict and not adapted.fits:
        shapes = "; ".join(adapted.shapes[:3]) or "none"
        raise ConfigError(
            f"init_from {spec} does not fit the backbone: missing {summarise_keys(adapted.missing)}; "
            f"unexpected {summarise_keys(adapted.unexpected)}; {len(adapted.shapes)} of another "
            f"shape ({shapes}). Build the backbone "
            "the weights were trained with (backbone, backbone_kwargs), or set init_strict: false "
            "to load the keys that fit (the rest start fresh)."
        )
    if not adapted.fits:  # the keys that fit, and only those
        target = model.state_dict()
        adapted.state = {k: v for k, v in adapted.state.items()
                         if k in target and v.shape == target[k].shape}  # fmt: skip
    return InitPlan(source, adapted)
