"""The run directory: one flat folder per run, which a restart resumes.

RUN/config.yaml               resolved config (rewritten on each start)
RUN/checkpoints/last.ckpt     always the newest state (written atomically)
RUN/hpc_ckpt_N.ckpt           Lightning's checkpoint on a SLURM pre-emption signal
                              (removed once a newer last.ckpt exists)
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
    """Writes a checkpoint to ``FILE.tmp`` and renames it over ``FILE``.

    Why not Lightning's own: it writes the file in place, so a job killed while
    writing (SIGKILL, a node failure) leaves a truncated ``last.ckpt`` and loses the
    last good state. A rename is atomic on a POSIX file system: the old file stays
    whole until the new one is complete.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
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


class GracefulStop(Callback):
    """Stopping a run by hand or by the system keeps its progress.

    SIGTERM (``kill``, a scheduler outside SLURM) or Ctrl-C: Lightning stops every
    process after the current step (or at the epoch's end), and this callback then
    writes ``last.ckpt`` of that consistent state. A second Ctrl-C stops at once,
    without saving: the state may be half-way through a step, and ``last.ckpt`` keeps
    the last good one. Nothing is saved either when a weight or buffer is NaN or
    infinite.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.last = Path(run_dir) / CHECKPOINT_DIR / LAST
        self._previous_sigint: Any = None
        self._trainer: pl.Trainer | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        if trainer is None or trainer.received_sigterm:
            raise KeyboardInterrupt
        trainer._signal_connector.received_sigterm = True
        if trainer.is_global_zero:
            print(
                "\nselfsup: stopping after this step and saving last.ckpt "
                "(Ctrl-C again to stop at once).",
                file=sys.stderr,
                flush=True,
            )

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return  # an error, or an abrupt stop that may have left a step half done
        if not _state_is_finite(pl_module):
            if trainer.is_global_zero:
                print(
                    f"selfsup: not saving a non-finite state; {self.last} is kept.", file=sys.stderr
                )
            return
        trainer.save_checkpoint(str(self.last))
        if trainer.is_global_zero:
            print(
                f"selfsup: stopped at step {trainer.global_step}; saved {self.last}.",
                file=sys.stderr,
                flush=True,
            )


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


def mid_epoch(trainer: pl.Trainer) -> bool:
    """Whether a checkpoint written now lies inside an epoch (one that ends on the epoch's
    last batch counts as the epoch's end, as Lightning restores it)."""
    epochs = trainer.fit_loop.epoch_progress.current
    return epochs.started > epochs.processed and not (
        trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    )


def next_epoch(trainer: pl.Trainer) -> int:
    """The epoch a run resumed from a checkpoint written now starts (or restarts)."""
    epochs = trainer.fit_loop.epoch_progress.current
    inside = epochs.started > epochs.processed
    return epochs.processed + int(inside and not mid_epoch(trainer))


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        # Plain lists and numbers: checkpoints stay loadable with weights_only=True.
        "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(Callback):
    """Random streams in mid-epoch checkpoints, restored when the run resumes.

    Why: Lightning's checkpoints hold no random state. Every epoch starts its streams
    from (seed, epoch, rank) (:class:`selfsup.data.module.EpochSeededLoader`), so a run
    resumed at an epoch boundary repeats the uninterrupted run exactly. A checkpoint
    written mid-epoch (pre-emption, ``checkpoint_every_n_steps``) also carries every
    rank's Python, NumPy, torch and CUDA generators, and the resumed epoch continues
    from them (its data restart from the epoch's beginning: Lightning cannot resume
    a DataLoader mid-epoch).
    """

    def __init__(self) -> None:
        self._restore: list[dict[str, Any]] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        from selfsup.distributed import gather_object_list

        states = gather_object_list(_rng_state())  # every rank takes part; rank 0 writes
        checkpoint["selfsup_rng"] = {"per_rank": states, "mid_epoch": mid_epoch(trainer)}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get("selfsup_rng")
        if not saved or not saved["mid_epoch"]:
            return
        if len(saved["per_rank"]) == trainer.world_size:
            self._restore = saved["per_rank"]
        else:
            warnings.warn(
                f"The checkpoint holds the random state of {len(saved['per_rank'])} "
                f"process(es), the run has {trainer.world_size}: the resumed epoch draws "
                "new random streams.",
                stacklevel=2,
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restore is not None:
            _set_rng_state(self._restore[trainer.global_rank])
            self._restore = None


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
