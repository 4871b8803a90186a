"""Collapse monitor: notice, and say in plain words, when a run maps every image to one point."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn


def embedding_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of the L2-normalised rows of ``z`` ``(B, D)``.

    Embeddings spread over the sphere have a std near ``1/sqrt(D)``; on
    collapse every row is the same point and the std is 0.
    """
    z = torch.nn.functional.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean().item() if len(z) > 1 else float("nan")


class CollapseWatch:
    """Decides when a run has collapsed: a symptom held for ``patience`` steps in a row.

    Random-init networks can look collapsed for their first steps (a ViT maps
    every image to nearly the same token), so one low reading proves nothing.
    The warning is given once per run.
    """

    def __init__(self, std_ratio_threshold: float = 0.05, patience: int = 100) -> None:
        self.threshold, self.patience = std_ratio_threshold, patience
        self.since: int | None = None
        self.warned = False

    def update(self, step: int, std_ratio: float, symptom: str | None = None) -> str | None:
        if symptom is None and std_ratio < self.threshold:
            symptom = (
                f"the normalised embeddings' per-dimension std is {std_ratio:.3f} x 1/sqrt(D) "
                "(about 1 when they spread over the sphere; 0 when every image maps to one point)."
            )
        if symptom is None:
            self.since = None
            return None
        if self.since is None:
            self.since = step
        if self.warned or step - self.since < self.patience:
            return None
        self.warned = True
        return f"for {step - self.since} steps {symptom}"


class CollapseMonitor(pl.Callback):
    """Logs ``train/embedding_std`` and ``train/embedding_std_ratio`` (the std x sqrt(D))
    from the embeddings each method's ``training_step`` returns, plus the method's own
    statistics (``collapse_stats``: DINO's teacher entropy and student-teacher KL),
    and warns once when a collapse symptom lasts ``patience`` steps.

    Args:
        every_n_steps: check every N optimizer steps (each check reads values to the CPU).
        std_ratio_threshold: below this std x sqrt(D) the embeddings count as collapsed.
        patience: optimizer steps a symptom must last before the warning.
    """

    def __init__(
        self, every_n_steps: int = 10, std_ratio_threshold: float = 0.05, patience: int = 100
    ) -> None:
        self.every_n_steps = every_n_steps
        self.watch = CollapseWatch(std_ratio_threshold, patience)
        self._last_step = -1

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps <= 0
            or not isinstance(outputs, dict)
            or "embeddings" not in outputs
            or step == self._last_step
            or step % self.every_n_steps
        ):
            return
        self._last_step = step
        z = outputs["embeddings"]
        std = embedding_std(z)
        ratio = std * math.sqrt(z.shape[1])
        stats = {k: float(v) for k, v in outputs.get("collapse_stats", {}).items()}
        pl_module.log("train/embedding_std", std)
        pl_module.log("train/embedding_std_ratio", ratio)
        for name, value in stats.items():
            pl_module.log(f"train/{name}", value)
        symptom = getattr(pl_module, "collapse_symptom", lambda _: None)(stats)
        message = self.watch.update(step, ratio, symptom)
        if message is not None:
            hint = getattr(pl_module, "collapse_hint", "lower the learning rate")
            rank_zero_warn(
                f"selfsup: {type(pl_module).__name__} looks collapsed: {message} Likely fix: {hint}."
            )
