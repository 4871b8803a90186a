"""Checkpoint files: which file a ``CKPT`` argument means, and reading one.

:func:`resolve_checkpoint` turns a checkpoint file or a run directory into a file (the
run's newest checkpoint); :func:`read_checkpoint` reads one, and a truncated or foreign
file is a one-line error, never a traceback.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from selfsup.errors import ConfigError
from selfsup.run_directory import RunDir

#: What torch.load raises for a file that is not a whole torch checkpoint.
UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
               ValueError, KeyError, AttributeError)  # fmt: skip


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
    except UNREADABLE as e:
        raise ConfigError(
            f"{path} cannot be read as a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'}): it is truncated or not "
            "a checkpoint; pass another file or the run directory."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint.")
    return checkpoint


def global_step(path: Path) -> int:
    """A checkpoint's global step; -1 (with a warning) for a file that does not load."""
    try:
        return int(read_checkpoint(path, mmap=True).get("global_step", -1))
    except ConfigError as e:  # a truncated file from an older, non-atomic write
        warnings.warn(f"Skipping an unreadable checkpoint: {e}", stacklevel=2)
        return -1


def newest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a restart continues from: the highest global step among
    ``last.ckpt`` and Lightning's ``hpc_ckpt_*.ckpt`` in the run directory."""
    candidates = RunDir(run_dir).checkpoint_files()
    if not candidates:
        return None
    steps = {p: global_step(p) for p in candidates}
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
                f"{path} is a directory without checkpoints ({RunDir.CHECKPOINTS}/{RunDir.LAST}): "
                "is it a selfsup run directory?"
            )
        return found
    raise ConfigError(f"Checkpoint {ckpt!r} does not exist: pass a .ckpt file or a run directory.")
