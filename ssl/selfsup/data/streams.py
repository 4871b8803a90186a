"""A run's random streams, and the loader that starts them.

Every random draw of a training run is a function of the run's seed and where the run
is, so a resumed run draws what an uninterrupted one draws, whatever the number of
DataLoader workers, and a checkpoint holds no random state (there is none to save):

- the epoch's order and the workers' seeds: the loader's generator, seeded from
  (seed, epoch, rank) when the epoch's iterator starts (:class:`EpochSeededLoader`);
- augmentations: Python's, NumPy's and torch's generators, seeded from (seed, epoch,
  dataset index) before each sample is transformed (:class:`SeededTransforms`);
- masks drawn by a collate function (I-JEPA): seeded from (seed, epoch, the batch's
  first index) before the collate function runs, in the process that runs it;
- draws in the training step (MAE's masks, dropout, drop path): seeded from (seed,
  epoch, batch index in the epoch, rank) right before each step
  (:meth:`PretrainDataModule.on_after_batch_transfer`).

A checkpoint written inside an epoch records the epoch and how many of its batches were
trained on; the resumed run draws the same epoch order and skips those batches in the
batch sampler (no image of theirs is loaded), so steps and epochs line up with the
uninterrupted run.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

_MASK64 = 2**64 - 1
# First key of each stream's seed, so that no two streams share a seed.
_LOADER, _SAMPLES, _BATCHES, _STEPS = range(4)


def mix_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from ``seed`` and non-negative integer keys, each mixed in with
    splitmix64 (Steele et al., 2014), so that nearby keys give unrelated seeds."""
    for key in keys:
        z = ((seed ^ key) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        seed = z ^ (z >> 31)
    return seed >> 1


def run_seed(*keys: int) -> int:
    """:func:`mix_seed` of the run's seed (``PL_GLOBAL_SEED``, set by ``seed_everything``)."""
    return mix_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)) & _MASK64, *keys)


def seed_rngs(seed: int, all_devices: bool = False) -> None:
    """Seed Python's, NumPy's and torch's global generators (torch's on the CPU only,
    unless ``all_devices``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if all_devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def resume_point(trainer: pl.Trainer) -> tuple[int, int]:
    """``(epoch, batches of it trained on)`` where a run resumed from a checkpoint
    written now continues, as Lightning restores its loops: a checkpoint written in
    ``on_train_batch_end`` (every N steps, a stop signal) counts that batch as done,
    and one written at an epoch's end or after its last batch starts the next epoch."""
    epochs = trainer.fit_loop.epoch_progress.current
    batches = trainer.fit_loop.epoch_loop.batch_progress.current
    if epochs.processed > epochs.completed:  # on_train_epoch_end
        return epochs.processed, 0
    # Lightning's RESTARTED_ON_TRAIN_BATCH_END (loops/training_epoch_loop.py, reset()).
    in_batch_end = batches.ready == batches.started == batches.processed == batches.completed + 1
    done = batches.completed + int(in_batch_end)
    if done >= trainer.num_training_batches:  # the epoch's last batch, or between epochs
        return trainer.current_epoch + int(in_batch_end), 0
    return trainer.current_epoch, done


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM, SIGINT and SIGUSR1 to the main process, which
    stops the run in order (a scheduler or a terminal signals every process; a worker
    that died of it would turn an orderly stop into a crash)."""
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


class _SkipBatches:
    """A batch sampler without its first ``n`` batches. Their indices are still drawn,
    so the rest come in the same order; the length stays the whole epoch's, which
    Lightning counts the resumed epoch's batches against."""

    def __init__(self, batches: Sized, n: int) -> None:
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.batches), self.n, None)  # type: ignore[call-overload]


class EpochSeededLoader(DataLoader):
    """A DataLoader whose every epoch starts its random streams from (seed, epoch, rank).

    When an epoch's iterator starts, the loader's generator (shuffling order, worker
    seeds), this process's Python, NumPy and torch generators, a DistributedSampler's
    epoch and a :class:`SeededTransforms` dataset's epoch are set for that epoch. The
    epoch comes from ``epoch_fn``, with how many of its batches to skip (a run resumed
    inside an epoch). Workers are not persistent: they are started for each epoch
    with that epoch's dataset.
    """

    def __init__(self, *args: Any, epoch_fn: Callable[[], tuple[int, int, int]] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        kwargs.setdefault("generator", torch.Generator())
        if kwargs.get("worker_init_fn") is None:
            kwargs["worker_init_fn"] = _ignore_stop_signals
        super().__init__(*args, **kwargs)
        self.epoch_fn = epoch_fn
        self._epochs_started = 0
        self._skip = 0

    @property
    def _index_sampler(self):  # DataLoader's: what a new iterator draws its indices from
        sampler = super()._index_sampler
        return _SkipBatches(sampler, self._skip) if getattr(self, "_skip", 0) else sampler

    def __iter__(self):
        epoch, rank, skip = self.epoch_fn() if self.epoch_fn else (self._epochs_started, 0, 0)
        self._epochs_started += 1
        seed = run_seed(_LOADER, epoch, rank)
        # A DistributedSampler orders by its own epoch; Lightning sets it only after the
        # first iterator of a (resumed) run exists.
        for sampler in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        if isinstance(self.dataset, SeededTransforms):
            self.dataset.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(seed)
        seed_rngs(seed)
        self._skip = skip  # read once, as the iterator starts
        try:
            return super().__iter__()
        finally:
            self._skip = 0

    # Lightning warns on a mid-epoch resume unless the loader is stateful. It resumes:
    # the DataModule's state says where (Lightning builds this loader, to count the
    # schedules' steps, before it would hand the loader a state of its own).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class TransformedDataset(Dataset):
    """``(image, label)`` -> ``(transform(image), label)``."""

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


class SeededTransforms(TransformedDataset):
    """:class:`TransformedDataset` whose draws are a function of (seed, epoch, index):
    every image gets the same views whichever process or worker loads it, in which
    order, after how many others. A batch (``__getitems__``, which PyTorch calls
    right before the collate function) also seeds the collate function's draws from
    the batch's first index. The generators are not restored: in a worker nothing
    else draws from them, and the main process seeds its own before each step.
    """

    def __init__(self, dataset: Dataset, transform) -> None:
        super().__init__(dataset, transform)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self._samples, self._batches = run_seed(_SAMPLES, epoch), run_seed(_BATCHES, epoch)

    def __getitem__(self, index: int):
        seed_rngs(mix_seed(self._samples, index))
        return super().__getitem__(index)

    def __getitems__(self, indices: list[int]) -> list:
        samples = [self[i] for i in indices]
        seed_rngs(mix_seed(self._batches, indices[0]))
        return samples


def seed_step(epoch: int, batch: int, rank: int) -> None:
    """Seed every generator for the training step on batch ``batch`` of ``epoch``."""
    seed_rngs(run_seed(_STEPS, epoch, batch, rank), all_devices=True)
