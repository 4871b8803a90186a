"""The run directory's callbacks: atomic checkpoints, the status file, the config kept
with the run, and the run's identity in every checkpoint. Where each file lives is
:class:`selfsup.run_directory.RunDir`'s to say."""

from __future__ import annotations

import difflib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from selfsup.checkpoints import global_step
from selfsup.run_directory import RunDir


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to ``FILE.tmp`` beside it, syncs it, and renames it over ``FILE``.

    Why not Lightning's own save: it stages the file through fsspec's transaction in the
    system temp directory and then moves it; when the run directory is on another file
    system (node-local /tmp, a shared cluster file system) the move is a copy into the
    target path, which a kill can truncate, and every checkpoint must also fit in /tmp.
    A rename within one directory is atomic on POSIX file systems: the old file stays
    whole until the new one is complete.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)


class RunCheckpoint(ModelCheckpoint):
    """``RUN/checkpoints/last.ckpt`` at every epoch end (and every N steps if given);
    once it is written, the older ``RUN/hpc_ckpt_*.ckpt`` of a pre-empted job go.

    ``enable_version_counter=False``: a resumed run overwrites ``last.ckpt`` rather
    than writing ``last-v1.ckpt``.
    """

    def __init__(self, run_dir: str | os.PathLike, every_n_train_steps: int | None = None):
        super().__init__(
            dirpath=str(RunDir(run_dir).checkpoints),
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        self.run_dir = RunDir(run_dir)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Why not Lightning's: with save_top_k=0 it writes last.ckpt at an epoch end only
        # when a top-k checkpoint was written at the same step, i.e. never.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and Path(filepath) == self.run_dir.last:
            for old in self.run_dir.hpc_checkpoints():
                if global_step(old) <= trainer.global_step:
                    old.unlink(missing_ok=True)


def checkpoint_callback(
    run_dir: str | os.PathLike, every_n_train_steps: int | None = None
) -> ModelCheckpoint:
    return RunCheckpoint(run_dir, every_n_train_steps)


class RunStatus(Callback):
    """``RUN/status.json``, rewritten (atomically, by rank 0) at most every ``interval``
    seconds and at every change of state: ``{"state": "training" | "finished" |
    "stopped" | "failed", "global_step", "epoch", "max_steps", "start_step" (the step
    this start resumed from), "slurm_job_id", "slurm_restart_count", "updated"}``. A glance at where a run is; tests and job
    scripts wait on it instead of sleeping."""

    def __init__(self, run_dir: str | os.PathLike, interval: float = 10.0) -> None:
        self.path, self.interval, self._written = RunDir(run_dir).status, interval, 0.0
        self.start_step = 0

    def _write(self, trainer: pl.Trainer, state: str) -> None:
        if not trainer.is_global_zero:
            return
        status = {
            "state": state,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "max_steps": trainer.max_steps,
            "start_step": self.start_step,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(status) + "\n")
        os.replace(tmp, self.path)
        self._written = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step  # > 0 when this start resumed a run
        self._write(trainer, "training")

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if time.monotonic() - self._written >= self.interval:
            self._write(trainer, "training")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        stopped = isinstance(exception, (SIGTERMException, KeyboardInterrupt))
        self._write(trainer, "stopped" if stopped else "failed")


class RunConfig(SaveConfigCallback):
    """``RUN/config.yaml``, written by rank 0 when training starts (so only after every
    check passed). A new run writes it; a resumed run keeps the first start's file and,
    when its values differ, appends the differences (a unified diff) to
    ``RUN/config_changes.txt``, so the run's history stays readable.

    The command sets :attr:`resumed_step` before fitting a resumed run.
    """

    resumed_step: int | None = None

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        run = RunDir(trainer.default_root_dir)
        path = run.config
        text = self.parser.dump(self.config, skip_none=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.resumed_step is None or not path.is_file():
            tmp = path.with_name("config.yaml.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
            return
        first = path.read_text()
        if first == text:
            return
        diff = difflib.unified_diff(first.splitlines(), text.splitlines(), "config.yaml",
                                    "this start", lineterm="", n=0)  # fmt: skip
        lines = [ln for ln in diff if not ln.startswith("@@")]
        when = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(run.config_changes, "a") as f:
            f.write(f"# resumed at step {self.resumed_step} on {when}\n" + "\n".join(lines) + "\n")


class RunIdentity(Callback):
    """Writes the run's name and seed into every checkpoint (``checkpoint["selfsup_run"]``):
    a restart compares them before it resumes (:mod:`selfsup.train.resume`)."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        checkpoint["selfsup_run"] = {
            "run_name": self.run_name,
            "seed": int(seed) if seed is not None else None,
        }
