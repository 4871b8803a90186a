"""Weights that are not selfsup's own, read into timm's keys: a weights file, a folder in
timm's hub format, or a timm pretrained tag. The one reader of such weights, for
``init_from`` (:mod:`selfsup.checkpoints.sources`) and for every ``--ckpt``
(:mod:`selfsup.checkpoints.loading`) alike.

- A ``.safetensors``/``.pth``/``.pt``/``.bin``/``.ckpt`` file: a state dict in timm's
  keys, possibly nested under ``teacher``, ``model``, ``state_dict`` or ``student`` (the
  teacher first: the weights DINO releases are evaluated with), with the prefixes
  ``module.``, ``backbone.``, ``encoder.`` stripped (and keys outside them dropped).
- A hub folder (``config.json`` + ``model.safetensors``, as ``selfsup export --format
  timm-hub`` and timm's ``save_for_hf`` write it; ``local-dir:DIR`` also works): its
  weights, architecture, model arguments and ``pretrained_cfg``.
- ``timm:<name>.<tag>`` (e.g. ``timm:vit_small_patch14_dinov2.lvd142m``): timm's pretrained
  weights, from the local Hugging Face cache or downloaded; without a cached copy and
  without a network, one line at once (no download retry loop).

Every error names ``what`` (the argument that gave the source: ``init_from X``,
``--ckpt X``) and the fix, in one line.
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
HUB_PREFIX = "local-dir:"
TAG_PREFIX = "timm:"


@dataclass
class Weights:
    """A state dict in timm's keys and what is known of it: the timm ``architecture`` and
    the ``model_args`` it was built with (hub folders, tags), its ``pretrained_cfg``
    (input size, mean, std), selfsup's ``provenance`` (a selfsup hub export), the ``file``
    read, and ``notes``: one line each on what reading did."""

    state: dict[str, torch.Tensor]
    file: str | None
    architecture: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hub_folder(spec: str | os.PathLike) -> Path | None:
    """The folder ``spec`` names if it is in timm's hub format (``config.json`` in it)."""
    text = str(spec)
    path = Path(text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else text).expanduser()
    return path if path.is_dir() and (path / "config.json").is_file() else None


def read_weights_file(path: Path, what: str) -> Weights:
    """A weights file (see the module doc) as a state dict in timm's keys."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"{what}: {path} is not a safetensors file ({e}).") from None
    else:
        raw = _torch_load(path, what)
    state, notes = unwrap_state_dict(raw, what)
    return Weights(state, str(path), notes=notes)


def read_hub_folder(path: Path, what: str) -> Weights:
    """A folder in timm's hub format: weights, architecture, model arguments, pretrained_cfg."""
    from safetensors.torch import load_file

    weights = next(
        (path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None
    )
    if weights is None:
        raise ConfigError(f"{what}: {path} has config.json but no model.safetensors.")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{what}: {path / 'config.json'} is not JSON ({e}).") from None
    state = (
        load_file(str(weights)) if weights.suffix == ".safetensors" else _torch_load(weights, what)
    )
    arch = config.get("architecture")
    return Weights(state, str(weights), arch, dict(config.get("model_args") or {}),
                   dict(config.get("pretrained_cfg") or {}), config.get("selfsup"),
                   [f"read {arch or '?'} weights from the hub directory {path}"])  # fmt: skip


def read_timm_tag(spec: str, what: str, give: str = "init_from: w.pth") -> Weights:
    """timm's pretrained weights ``timm:<name>.<tag>``, cached or downloaded; offline and
    uncached, the line says how to save them elsewhere and what to ``give`` then."""
    import timm

    name = spec[len(TAG_PREFIX) :]
    if not timm.is_model(name.split(".")[0]):
        import difflib

        close = difflib.get_close_matches(name, timm.list_pretrained(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(TAG_PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"{what}: timm has no model {name.split('.')[0]!r}.{hint}")
    if not _cached(name) and not _online():
        raise ConfigError(
            f"{what}: timm's weights for {name} are not in the local cache and "
            "huggingface.co cannot be reached from here. On a machine with internet, save them "
            f"(torch.save(timm.create_model('{name}', pretrained=True).state_dict(), 'w.pth')) "
            f"and give {give}."
        )
    model = timm.create_model(name, pretrained=True, num_classes=0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Weights(state, _cached(name), name.split(".")[0], {}, dict(model.pretrained_cfg),
                   notes=[f"read timm's pretrained {name}"])  # fmt: skip


def _torch_load(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"{what}: {path} cannot be read as a weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120]}); give a state dict saved with torch.save or safetensors."
        ) from None


def unwrap_state_dict(raw: Any, what: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict of tensors from a saved object: nesting levels taken (teacher first),
    common prefixes stripped (keys outside a stripped prefix dropped)."""
    notes = []
    while isinstance(raw, dict) and not _is_state(raw):
        key = next((k for k in NESTED if isinstance(raw.get(k), dict)), None)
        if key is None:
            raise ConfigError(
                f"{what}: no state dict found (top-level keys {sorted(raw)[:6]}); "
                f"save the backbone's state_dict(), or nest it under one of {', '.join(NESTED)}."
            )
        notes.append(f"took the weights under '{key}'")
        raw = raw[key]
    if not isinstance(raw, dict):
        raise ConfigError(f"{what}: holds a {type(raw).__name__}, not a state dict.")
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
