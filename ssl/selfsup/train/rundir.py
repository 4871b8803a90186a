"""The run directory: one flat folder per run, which a restart resumes.

RUN/config.yaml               resolved config (rewritten on each start)
RUN/checkpoints/last.ckpt     always the newest state (written atomically)
RUN/hpc_ckpt_N.ckpt           Lightning's own pre-emption checkpoints, if some other setup
                              wrote them (read on resume, removed once last.ckpt is newer)
RUN/metrics.csv               every logged metric, kept across restarts
RUN/status.json               where the run is: state, step, epoch, SLURM job and restarts
RUN/wandb/                    the wandb run, when wandb is on
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.exceptions import SIGTERMException

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
            dirpath=os.path.join(run_dir, CHECKPOINT_DIR),
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        self.run_dir = Path(run_dir)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Why not Lightning's: with save_top_k=0 it writes last.ckpt at an epoch end only
        # when a top-k checkpoint was written at the same step, i.e. never.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and Path(filepath).name == LAST:
            for old in self.run_dir.glob("hpc_ckpt_*.ckpt"):
                if _global_step(old) <= trainer.global_step:
                    old.unlink(missing_ok=True)


def checkpoint_callback(
    run_dir: str | os.PathLike, every_n_train_steps: int | None = None
) -> ModelCheckpoint:
    return RunCheckpoint(run_dir, every_n_train_steps)


def _state_is_finite(module: torch.nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for t in [*module.parameters(), *module.buffers()]
        if t.is_floating_point()
    )


def _requeue_target() -> str | None:
    """This SLURM job's id for ``scontrol requeue`` (``ARRAYID_TASK`` for an array task)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class GracefulStop(Callback):
    """Signals that stop a run keep its progress, with every process in step.

    - SIGTERM (``kill``, a scheduler) or Ctrl-C: stop after the current step and write
      ``last.ckpt``; Ctrl-C twice stops at once, without saving (the state may be half
      way through a step; ``last.ckpt`` keeps the last good one).
    - SIGUSR1 inside a SLURM job (``#SBATCH --signal=USR1@T``): write ``last.ckpt``,
      ``scontrol requeue`` the job, and stop; the requeued job resumes from it.

    Why not Lightning's own handlers: its SLURM handler saves a checkpoint from inside
    the signal handler, wherever each process happens to be in its step, and the save
    involves collectives (a barrier), so processes can pair the wrong collectives and
    hang or save a half-updated state; its SIGTERM handling lets each process stop on
    its own flag, at different steps. Here a handler only sets a flag; at the end of
    every step the flags are combined over the processes (one scalar all-reduce), and
    all of them save and stop at that same step. Nothing is saved when a weight or
    buffer is NaN or infinite. (The pretraining command turns Lightning's SLURM
    auto-requeue off so that only this path acts.)
    """

    STOP, REQUEUE = 1, 2

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.last = Path(run_dir) / CHECKPOINT_DIR / LAST
        self._previous: dict[int, Any] = {}
        self._flag = 0
        self._action = 0
        self._interrupts = 0

    # -- handlers (main thread of every process) -----------------------------------------
    def _on_stop(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt
            print("\nselfsup: stopping after this step (Ctrl-C again to stop at once).",
                  file=sys.stderr, flush=True)  # fmt: skip
        self._flag = max(self._flag, self.STOP)

    def _on_requeue(self, signum: int, frame: Any) -> None:
        self._flag = self.REQUEUE

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        self._flag, self._interrupts = 0, 0
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop}
        if _requeue_target() is not None:
            handlers[signal.SIGUSR1] = self._on_requeue
        for signum, handler in handlers.items():
            self._previous[signum] = signal.signal(signum, handler)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    # -- the decision, at the same point on every process --------------------------------
    def _agreed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        flag = torch.tensor([self._flag], device=getattr(pl_module, "device", "cpu"))
        if trainer.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        self._action = self._agreed(trainer, pl_module)
        if self._action == 0:
            return
        # Every process reached this point for the same step, and knows the same action.
        if _state_is_finite(pl_module):
            trainer.save_checkpoint(str(self.last))
            saved = f"saved {self.last} at step {trainer.global_step}"
        else:
            saved = f"not saving a non-finite state; {self.last} is kept"
        if trainer.is_global_zero:
            print(f"selfsup: stopping: {saved}.", file=sys.stderr, flush=True)
        raise SIGTERMException  # Lightning's orderly stop, on every process at once

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal during the epoch's end hooks: the epoch-end last.ckpt (RunCheckpoint,
        # after this hook) is the checkpoint, and Lightning stops once the epoch is closed.
        self._action = self._agreed(trainer, pl_module)
        if self._action:
            trainer._signal_connector.received_sigterm = True
            if trainer.is_global_zero:
                print(f"selfsup: stopping at the end of epoch {trainer.current_epoch}: "
                      f"{self.last} is written now.", file=sys.stderr, flush=True)  # fmt: skip

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if self._action == self.REQUEUE and trainer.is_global_zero:
            import subprocess

            target = _requeue_target()
            result = subprocess.run(["scontrol", "requeue", str(target)], capture_output=True,
                                    text=True)  # fmt: skip
            outcome = (
                "requeued" if result.returncode == 0 else f"not requeued: {result.stderr.strip()}"
            )
            print(f"selfsup: SLURM job {target} {outcome}.", file=sys.stderr, flush=True)


class RunStatus(Callback):
    """``RUN/status.json``, rewritten (atomically, by rank 0) at most every ``interval``
    seconds and at every change of state: ``{"state": "training" | "finished" |
    "stopped" | "failed", "global_step", "epoch", "max_steps", "start_step" (the step
    this start resumed from), "slurm_job_id", "slurm_restart_count", "updated"}``. A glance at where a run is; tests and job
    scripts wait on it instead of sleeping."""

    def __init__(self, run_dir: str | os.PathLike, interval: float = 10.0) -> None:
        self.path, self.interval, self._written = Path(run_dir) / "status.json", interval, 0.0
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
        tmp = self.path.with_name("status.json.tmp")
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


def _global_step(path: Path) -> int:
    """A checkpoint's global step; -1 (with a warning) for a file that does not load."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", -1))
    except Exception as e:  # a truncated file from an older, non-atomic write
        warnings.warn(f"Skipping unreadable checkpoint {path}: {e}", stacklevel=2)
        return -1


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
    steps = {p: _global_step(p) for p in candidates}
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
                f"{path} is a directory without checkpoints ({CHECKPOINT_DIR}/{LAST}): is it a selfsup run directory?"
            )
        return found
    raise ConfigError(f"Checkpoint {ckpt!r} does not exist: pass a .ckpt file or a run directory.")
