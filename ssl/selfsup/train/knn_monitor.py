"""Online kNN monitor: watch the representation learn, without choosing any checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from selfsup.data.summary import base_dataset
from selfsup.distributed import gather_uneven, rank, world_size
from selfsup.knn import knn_macro_auroc, knn_top1
from selfsup.precision import eval_autocast


class KNNMonitor(pl.Callback):
    """Every ``every_n_epochs`` epochs (and when training ends), weighted kNN of the current
    backbone: labelled training images as the memory bank, held-out images as
    queries, logged as ``val/knn_top1``. Before the first step of a new run it
    also measures the random-init backbone (``val/knn_top1_random_init``), or the
    starting weights of a run with ``init_from`` (``val/knn_top1_init``, "init weights"),
    and at the end prints both side by side. Features are computed in bf16 where the
    hardware has native bf16 (GPUs, AVX-512 bf16 CPUs), as the evaluators' are. On multi-label data (several 0/1 findings per
    image) the figure is the macro AUROC of the kNN's vote shares
    (:func:`knn_macro_auroc`), logged as ``val/knn_macro_auroc`` (and
    ``val/knn_macro_auroc_random_init``).

    Args:
        every_n_epochs: 0 turns the monitor off.
        k, temperature: the kNN's neighbours and softmax temperature.
        max_train, max_test: subset sizes (fixed, seeded), so a check costs seconds.
        batch_size: feature-extraction batch per process.
        random_init_baseline: measure the untrained backbone first.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        k: int = 20,
        temperature: float = 0.07,
        max_train: int = 5000,
        max_test: int = 2000,
        batch_size: int = 256,
        random_init_baseline: bool = True,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.k, self.temperature = k, temperature
        self.max_train, self.max_test = max_train, max_test
        self.batch_size = batch_size
        self.random_init_baseline = random_init_baseline
        self.baseline: float | None = None
        self.last: float | None = None
        self._last_step = -1
        self._data: tuple[Dataset, Dataset] | None = None
        self.multilabel = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.every_n_epochs <= 0 or stage != "fit":
            return
        datamodule = trainer.datamodule
        self._data = (
            datamodule.knn_datasets(self.max_train, self.max_test)
            if datamodule is not None
            else None
        )
        if self._data is None:
            rank_zero_info("kNN monitor: off (the data has no labelled train/test splits).")
        else:
            self.multilabel = bool(getattr(base_dataset(self._data[0]), "multilabel", False))

    @property
    def _metric(self) -> tuple[str, str]:
        """(logged name, printed name) of the figure."""
        if self.multilabel:
            return "val/knn_macro_auroc", "macro AUROC"
        return "val/knn_top1", "top-1"

    @torch.no_grad()
    def _features(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, ds: Dataset
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Each process embeds its own share (no padding, so no sample counts twice).
        shard = torch.utils.data.Subset(ds, list(range(rank(), len(ds), world_size())))
        feats, labels = [], []
        # The run's precision, and bf16 autocast where the hardware runs it natively even
        # in an fp32 run, as the evaluators do (selfsup.precision.eval_autocast).
        with trainer.precision_plugin.forward_context(), eval_autocast(pl_module.device):
            for x, y in DataLoader(shard, batch_size=self.batch_size, num_workers=0):
                feats.append(pl_module.extract_features(x.to(pl_module.device)).float())
                labels.append(torch.as_tensor(y, device=pl_module.device))
        return gather_uneven(torch.cat(feats)).cpu(), gather_uneven(torch.cat(labels)).cpu()

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        assert self._data is not None
        was_training = pl_module.training
        pl_module.eval()
        try:
            train_f, train_y = self._features(trainer, pl_module, self._data[0])
            test_f, test_y = self._features(trainer, pl_module, self._data[1])
        finally:
            pl_module.train(was_training)
        self.multilabel = train_y.ndim == 2
        score = knn_macro_auroc if self.multilabel else knn_top1
        return score(train_f, train_y, test_f, test_y, self.k, self.temperature)

    def _log(self, trainer: pl.Trainer, name: str, value: float) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(
                {name: value, "epoch": trainer.current_epoch}, step=trainer.global_step
            )
        trainer.callback_metrics[name] = torch.tensor(value)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._data is None or not self.random_init_baseline:
            return
        if self.baseline is None and trainer.global_step == 0:
            self.baseline = self.evaluate(trainer, pl_module)
            name, shown = self._metric
            suffix, label = _start(pl_module)
            self._log(trainer, f"{name}_{suffix}", self.baseline)
            rank_zero_info(f"kNN monitor: {label} {shown} {self.baseline:.4f} (k={self.k})")

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last = self.evaluate(trainer, pl_module)
        self._last_step = trainer.global_step
        name, shown = self._metric
        self._log(trainer, name, self.last)
        rank_zero_info(
            f"kNN monitor: epoch {trainer.current_epoch} step {trainer.global_step} {shown} {self.last:.4f}"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._data is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._check(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._data is None:
            return
        if self._last_step != trainer.global_step:
            self._check(trainer, pl_module)
        if trainer.is_global_zero:
            label = _start(pl_module)[1]
            baseline = f"   {label}: {self.baseline:.4f}" if self.baseline is not None else ""
            print(f"kNN {self._metric[1]} (k={self.k}): {self.last:.4f}{baseline}", flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "last": self.last}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.baseline = state_dict.get("baseline")
        self.last = state_dict.get("last")


def _start(pl_module: pl.LightningModule) -> tuple[str, str]:
    """The step-0 figure's log suffix and label: the starting weights of an ``init_from``
    run, else the random-init backbone."""
    if getattr(pl_module, "hparams", {}).get("init_from"):
        return "init", "init weights"
    return "random_init", "random-init backbone"
