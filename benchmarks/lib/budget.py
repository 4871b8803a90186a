"""A run on a budget of training time: the clock that stops it (evaluations excluded) and
evaluates at its marks, the step clock and calibration that size it, the schedule
compressed into it, and the CPU trainer that runs it."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from selfsup.precision import cpu_precision


class Budget(pl.Callback):
    """Training clock (evaluations excluded); kNN at the marks; stop at the budget."""

    def __init__(self, budget_s: float, points: int, evaluate_fn, stop: bool = True) -> None:
        self.budget_s, self.evaluate_fn, self.stop = budget_s, evaluate_fn, stop
        self.marks = [budget_s * (i + 1) / points for i in range(points - 1)]
        self.curve: list[dict[str, float]] = []
        self.train_s = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {name: w.detach().clone() for name, w in _weights(pl_module).items()}
        self._t = time.perf_counter()

    def moved(self, pl_module) -> dict[str, float]:
        """Median relative move |w - w0| / |w0| of the backbone's conv and linear weights
        and of its norm layers' scales since the start: how far a run left its random
        initialisation (what an optimiser's trust ratio bounds). Weights that start at
        zero (timm's zero-initialised last BatchNorm of each residual block) have no
        relative move and are left out."""
        kinds: dict[str, list[float]] = {"conv_linear": [], "norm": []}
        for name, w in _weights(pl_module).items():
            w0 = self.start[name]
            if w0.norm() > 0:
                kind = "conv_linear" if w.ndim > 1 else "norm"
                kinds[kind].append(((w.detach() - w0).norm() / w0.norm()).item())
        return {kind: statistics.median(v) for kind, v in kinds.items() if v}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.train_s += now - self._t
        if self.marks and self.train_s >= self.marks[0]:
            self.marks.pop(0)
            self.point(trainer, pl_module)
        if self.stop and self.train_s >= self.budget_s:
            trainer.should_stop = True
        self._t = time.perf_counter()

    def point(self, trainer, pl_module, **extra) -> None:
        was_training = pl_module.training
        pl_module.eval()
        result = self.evaluate_fn(pl_module, **extra)
        pl_module.train(was_training)
        if self.curve and self.curve[-1]["step"] == trainer.global_step:
            self.curve.pop()  # the end fell on a mark: keep the final evaluation only
        self.curve.append({"minutes": self.train_s / 60, "step": trainer.global_step, **result})
        print(f"    {self.train_s / 60:5.2f} min, step {trainer.global_step}: {result}", flush=True)


def _weights(pl_module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's conv and linear weights and its norm layers' scales, by name."""
    backbone = getattr(pl_module, "backbone", pl_module)
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    out = {}
    for name, module in backbone.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, *norms)) and \
                getattr(module, "weight", None) is not None:  # fmt: skip
            out[name] = module.weight
    return out


class StepClock(pl.Callback):
    """The start time of every training step (``starts``, perf_counter seconds)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def cpu_trainer(precision: str, max_steps: int, callbacks: list) -> pl.Trainer:
    """A bare Trainer on the CPU (no logger, checkpoints or progress bar) for ``max_steps``."""
    precision = cpu_precision(precision, "cpu")[0]  # as selfsup pretrain would run it
    return pl.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=max_steps, max_epochs=-1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        default_root_dir=tempfile.gettempdir(),
    )  # fmt: skip


def fit(trainer: pl.Trainer, module: pl.LightningModule, loader: Any) -> None:
    """``trainer.fit`` on a DataModule (selfsup's side) or a DataLoader (lightly's)."""
    if isinstance(loader, pl.LightningDataModule):
        trainer.fit(module, datamodule=loader)
    else:
        trainer.fit(module, train_dataloaders=loader)


def calibrate(build: Callable[[], tuple[Any, Any, str]], steps: int = 6) -> float:
    """Median step time (s) of the last ``steps - 2`` of ``steps`` steps of a fresh build."""
    module, loader, precision = build()
    clock = StepClock()
    fit(cpu_trainer(precision, steps + 1, [clock]), module, loader)
    gaps = [b - a for a, b in zip(clock.starts[2:-1], clock.starts[3:])]
    return statistics.median(gaps)


def compress_schedule(model: pl.LightningModule, scale: float) -> None:
    """Every ``*_epochs`` value of a selfsup method (warm-up, teacher temperature and
    momentum schedules, frozen last layer) times ``scale``: a run of ``scale`` times the
    config's epochs goes through its whole schedule."""
    for key in list(model.hparams):
        if key.endswith("_epochs") and isinstance(model.hparams[key], (int, float)):
            model.hparams[key] = type(model.hparams[key])(model.hparams[key] * scale)
