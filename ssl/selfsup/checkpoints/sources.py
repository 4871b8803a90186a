"""Where a run's starting weights come from (``init_from``): a timm weights file, a
selfsup export, checkpoint or run directory, a directory in timm's hub format, or a timm
pretrained tag; read into timm's keys, fitted to the run's backbone
(:mod:`selfsup.checkpoints.adapt`), with the source, its sha256 and its normalisation.

- ``timm:<name>.<tag>`` (e.g. ``timm:vit_small_patch14_dinov2.lvd142m``): timm's pretrained
  weights, from the local Hugging Face cache or downloaded; without a cached copy and
  without a network the run stops at once with one line (no download retry loop).
- A selfsup checkpoint or run directory: its evaluated backbone (the teacher for DINO and
  I-JEPA), with the run's normalisation. A selfsup export (``.safetensors``): its backbone.
- A hub directory (``config.json`` + ``model.safetensors``, as ``selfsup export --format
  timm-hub`` and timm's ``save_for_hf`` write it; ``local-dir:DIR`` also works): its
  weights and ``pretrained_cfg`` normalisation.
- Any other ``.safetensors``/``.pth``/``.pt``/``.bin``/``.ckpt``: a state dict in timm's
  keys, possibly nested under ``teacher``, ``model``, ``state_dict`` or ``student`` (the
  teacher first: the weights DINO releases are evaluated with), with the prefixes
  ``module.``, ``backbone.``, ``encoder.`` stripped (and keys outside them dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfsup.errors import ConfigError

NESTED = ("teacher", "model", "state_dict", "student", "model_ema", "state_dict_ema")
PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


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


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_init_source(spec: str) -> InitSource:
    """Read ``spec`` (see the module doc) into timm's keys; one-line errors."""
    if spec.startswith("timm:"):
        return _timm_tag(spec)
    path = Path(spec[len("local-dir:") :] if spec.startswith("local-dir:") else spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"init_from {spec}: no such file or directory. Give a weights file "
            "(.safetensors, .pth, .bin), a selfsup checkpoint, export or run directory, a "
            "timm hub directory, or a timm tag such as timm:vit_small_patch16_224.augreg_in21k."
        )
    if path.is_dir() and (path / "config.json").is_file():
        return _hub_dir(spec, path)
    if path.is_dir() or path.suffix == ".ckpt" or _is_selfsup_export(path):
        return _selfsup_file(spec, path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(
            f"init_from {spec}: give a {', '.join(WEIGHT_SUFFIXES)} file or a directory."
        )
    return _weights_file(spec, path)


def _is_selfsup_export(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format", "").startswith("selfsup-backbone")
    except Exception:
        return False


def _selfsup_file(spec: str, path: Path) -> InitSource:
    from selfsup.checkpoints import load_backbone, resolve_checkpoint

    loaded = load_backbone(path)
    file = path if path.suffix == ".safetensors" else resolve_checkpoint(path)
    state = {k: v.detach().clone() for k, v in loaded.backbone.model.state_dict().items()}
    what = f"the {loaded.meta['loaded']} backbone of {loaded.meta.get('method')}"
    return InitSource(state, spec, str(file), sha256_of(file), loaded.meta.get("mean"),
                      loaded.meta.get("std"), [f"read {what} from {file}"])  # fmt: skip


def _hub_dir(spec: str, path: Path) -> InitSource:
    from safetensors.torch import load_file

    weights = next(
        (path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None
    )
    if weights is None:
        raise ConfigError(f"init_from {spec}: {path} has config.json but no model.safetensors.")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"init_from {spec}: {path / 'config.json'} is not JSON ({e}).") from None
    cfg = config.get("pretrained_cfg") or {}
    state = (
        load_file(str(weights)) if weights.suffix == ".safetensors" else _torch_load(spec, weights)
    )
    arch = config.get("architecture", "?")
    return InitSource(state, spec, str(weights), sha256_of(weights), cfg.get("mean"), cfg.get("std"),
                      [f"read {arch} weights from the hub directory {path}"])  # fmt: skip


def _torch_load(spec: str, path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"init_from {spec}: {path} cannot be read as a weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120]}); give a state dict saved with torch.save or safetensors."
        ) from None


def _weights_file(spec: str, path: Path) -> InitSource:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ConfigError(
                f"init_from {spec}: {path} is not a safetensors file ({e})."
            ) from None
    else:
        raw = _torch_load(spec, path)
    state, notes = unwrap_state_dict(raw, spec)
    return InitSource(state, spec, str(path), sha256_of(path), notes=notes)


def unwrap_state_dict(raw: Any, spec: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict of tensors from a saved object: nesting levels taken (teacher first),
    common prefixes stripped (keys outside a stripped prefix dropped)."""
    notes = []
    while isinstance(raw, dict) and not _is_state(raw):
        key = next((k for k in NESTED if isinstance(raw.get(k), dict)), None)
        if key is None:
            raise ConfigError(
                f"init_from {spec}: no state dict found (top-level keys {sorted(raw)[:6]}); "
                f"save the backbone's state_dict(), or nest it under one of {', '.join(NESTED)}."
            )
        notes.append(f"took the weights under '{key}'")
        raw = raw[key]
    if not isinstance(raw, dict):
        raise ConfigError(f"init_from {spec}: holds a {type(raw).__name__}, not a state dict.")
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    for prefix in PREFIXES:
        inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if inside:
            dropped = len(state) - len(inside)
            notes.append(
                f"stripped '{prefix}'"
                + (f", dropped {dropped} key(s) outside it" if dropped else "")
            )
            state = inside
    return state, notes


def _is_state(d: dict) -> bool:
    return bool(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) >= len(d) / 2


def _timm_tag(spec: str) -> InitSource:
    import timm

    name = spec[len("timm:") :]
    if not timm.is_model(name.split(".")[0]):
        import difflib

        close = difflib.get_close_matches(name, timm.list_pretrained(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ConfigError(f"init_from {spec}: timm has no model {name.split('.')[0]!r}.{hint}")
    if not _cached(name) and not _online():
        raise ConfigError(
            f"init_from {spec}: timm's weights for {name} are not in the local cache and "
            "huggingface.co cannot be reached from here. On a machine with internet, save them "
            f"(torch.save(timm.create_model('{name}', pretrained=True).state_dict(), 'w.pth')) "
            "and give init_from: w.pth."
        )
    model = timm.create_model(name, pretrained=True, num_classes=0)
    cfg = model.pretrained_cfg
    file = _cached(name)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return InitSource(state, spec, file, sha256_of(file) if file else None,
                      list(cfg.get("mean", [])) or None, list(cfg.get("std", [])) or None,
                      [f"read timm's pretrained {name}"])  # fmt: skip


def _cached(name: str) -> str | None:
    """The local Hugging Face cache file of timm's pretrained ``name``, if there is one."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return None
        for filename in (
            "model.safetensors",
            "pytorch_model.bin",
            getattr(cfg, "hf_hub_filename", None),
        ):
            if filename:
                found = try_to_load_from_cache(repo, filename)
                if isinstance(found, str):
                    return found
    except Exception:
        return None
    return None


def _online(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers within ``timeout`` seconds (False when offline mode
    is set), so an offline machine fails at once rather than in timm's retry loop."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


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
