"""Which checkpoint a start resumes from, and whether it may.

Two checks, both before anything is written. :func:`checkpoint_to_resume` needs only the
arguments: the file must exist, load, and be a selfsup training checkpoint, so a bad
``--resume`` is refused before Lightning builds a Trainer or the data is read.
:func:`check_same_run` needs the built method: a run directory resumes only its own run,
so the checkpoint's metadata (method, backbone and its kwargs, the run's name) and its
weights' shapes are compared with the run about to start. A mismatch is one line naming
both sides and the two ways out (another run directory, or ``--resume never`` to start
this one afresh).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selfsup.checkpoints import newest_checkpoint, read_checkpoint, resolve_checkpoint
from selfsup.errors import ConfigError


def checkpoint_to_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """``--resume auto|never|PATH`` -> the checkpoint file to resume from, or None. PATH is
    a ``.ckpt`` file or a run directory (its newest checkpoint). A file that is missing,
    does not load, or is not a selfsup training checkpoint is a ConfigError."""
    if resume == "never":
        return None
    if resume == "auto":
        path = newest_checkpoint(run_dir)
        if path is None:
            return None
    else:
        path = Path(resume).expanduser()
        if not path.exists():
            raise ConfigError(
                f"--resume {resume}: no such file or directory: give a .ckpt file or a run "
                "directory, auto (this run directory's newest checkpoint) or never."
            )
        path = resolve_checkpoint(path)
    training_checkpoint(path)
    return path


def training_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint file ``path`` (tensors memory-mapped), if selfsup pretrain wrote it."""
    checkpoint = read_checkpoint(path, mmap=True)
    if checkpoint.get("selfsup") is None or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{path} is not a selfsup training checkpoint: pass a run directory or a .ckpt "
            "written by selfsup pretrain, or --resume never."
        )
    return checkpoint


def check_same_run(
    path: Path, model: Any, run_name: str, run_dir: str | os.PathLike
) -> tuple[dict, int]:
    """Raise a ConfigError unless checkpoint ``path`` holds a run that ``model`` (of the
    run named ``run_name``) can continue; returns the checkpoint's run record
    (``{"run_name", "seed"}``, empty for checkpoints older than it) and its global step."""
    checkpoint = training_checkpoint(path)
    meta = checkpoint["selfsup"]
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
