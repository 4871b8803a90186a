"""Stop signals (SIGTERM, Ctrl-C, SLURM's pre-emption warning) that keep a run's progress."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from selfsup.run_directory import RunDir


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
        self.last = RunDir(run_dir).last
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
        if trainer.fit_loop._should_accumulate():
            # Inside an accumulation window: stop at the batch that steps the optimizer, so
            # no accumulated gradient is lost and the resumed run stays exact.
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
