"""The run directory: one flat folder per run, which a restart resumes.

RUN/config.yaml               resolved config (rewritten on each start)
RUN/checkpoints/last.ckpt     always the newest state
RUN/metrics.csv               every logged metric, kept across restarts
RUN/wandb/                    the wandb run, when wandb is on
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from selfsup.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts, which
    would lose a resumed run's history; this one keeps it and continues its columns."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)


class RunCSVLogger(CSVLogger):
    """CSV logger writing ``RUN/metrics.csv`` directly (no ``lightning_logs/version_N``)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def checkpoint_callback(
    run_dir: str | os.PathLike, every_n_train_steps: int | None = None
) -> ModelCheckpoint:
    """Writes ``RUN/checkpoints/last.ckpt`` at every epoch end (and every N steps if given).

    ``enable_version_counter=False``: a resumed run overwrites ``last.ckpt``
    rather than writing ``last-v1.ckpt``.
    """
    return ModelCheckpoint(
        dirpath=os.path.join(run_dir, CHECKPOINT_DIR),
        save_last=True,
        save_top_k=0,
        every_n_train_steps=every_n_train_steps,
        enable_version_counter=False,
    )


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
    if len(candidates) == 1:
        return candidates[0]

    def step(path: Path) -> int:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", -1))

    return max(candidates, key=step)


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
