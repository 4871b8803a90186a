"""Which checkpoint a start resumes from, and whether it may.

A run directory resumes only its own run: before anything is written, the checkpoint's
metadata (method, backbone and its kwargs, the run's name) and its weights' shapes are
compared with the run about to start. A mismatch is one line naming both sides and the
two ways out (another run directory, or ``--resume never`` to start this one afresh).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selfsup.checkpoints import newest_checkpoint, read_checkpoint
from selfsup.errors import ConfigError


def checkpoint_to_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """``--resume auto|never|PATH`` -> the checkpoint file to resume from, or None."""
    if resume == "auto":
        return newest_checkpoint(run_dir)
    if resume == "never":
        return None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"--resume {resume}: no such checkpoint (use auto, never or a .ckpt path)."
        )
    return path


def check_same_run(
    path: Path, model: Any, run_name: str, run_dir: str | os.PathLike
) -> tuple[dict, int]:
    """Raise a ConfigError unless checkpoint ``path`` holds a run that ``model`` (of the
    run named ``run_name``) can continue; returns the checkpoint's run record
    (``{"run_name", "seed"}``, empty for checkpoints older than it) and its global step."""
    checkpoint = read_checkpoint(path, mmap=True)
    meta = checkpoint.get("selfsup")
    if meta is None or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{path} is not a selfsup training checkpoint: pass a run directory or a .ckpt "
            "written by selfsup pretrain, or --resume never."
        )
    record = checkpoint.get("selfsup_run") or {}
    mine = {
        "method": type(model).__name__,
        "backbone": model.backbone.name,
        "backbone_kwargs": dict(model.hparams.get("backbone_kwargs") or {}),
        "run_name": run_name,
    }
    theirs = {
        "method": meta.get("method"),
        "backbone": meta.get("backbone"),
        "backbone_kwargs": dict(meta.get("backbone_kwargs") or {}),
        "run_name": record.get("run_name", run_name),
    }
    differ = [key for key in mine if mine[key] != theirs[key]]
    if not differ:
        differ = _shape_mismatches(checkpoint["state_dict"], model.state_dict())
    if differ:

        def side(d: dict) -> str:
            return (
                f"{d['method']} {d['backbone']} {d['backbone_kwargs'] or ''} (run {d['run_name']})"
            )

        raise ConfigError(
            f"{run_dir} holds another run: its checkpoint {path.name} is {side(theirs)}, this "
            f"command is {side(mine)}; they differ in {', '.join(differ[:4])}. Nothing was "
            "written. Use --trainer.default_root_dir NEW_DIR for a new run, or --resume never "
            "to start this directory afresh (its checkpoints will be overwritten)."
        )
    return record, int(checkpoint.get("global_step", 0))


def _shape_mismatches(saved: dict[str, Any], model: dict[str, Any]) -> list[str]:
    missing = [f"missing weights {k}" for k in model if k not in saved]
    extra = [f"unexpected weights {k}" for k in saved if k not in model]
    shapes = [
        f"shape of {k} {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in model.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    return shapes + missing + extra
