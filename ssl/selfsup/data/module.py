"""The LightningDataModule that pairs a dataset with a method's view pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data.datasets import DataError, Intensity, match_channels, open_dataset
from selfsup.transforms import EvalTransform, ViewTransform


def epoch_seed(epoch: int, rank: int = 0, salt: int = 0) -> int:
    """The seed of one epoch's random streams: a function of the run's seed
    (``PL_GLOBAL_SEED``, set by ``seed_everything``), the epoch, the process, and a
    salt (the step a run resumed mid-epoch from; 0 otherwise)."""
    base = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return (((base * 1_000_003 + epoch) * 1009 + rank) * 7_919 + salt) % 2**63


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM, SIGINT and SIGUSR1 to the main process, which
    stops the run in order (a scheduler or a terminal signals every process; a worker
    that died of it would turn an orderly stop into a crash)."""
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


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


class EpochSeededLoader(DataLoader):
    """A DataLoader whose every epoch starts its random streams from :func:`epoch_seed`.

    Why: a resumed run must draw the same data order, augmentations and masks as the
    run it continues, and Lightning's checkpoints hold no random state (worker
    streams could not be saved anyway: they live in other processes). When an
    epoch's iterator starts, the loader's generator (shuffling order, worker seeds)
    and this process's Python, NumPy and torch generators (augmentations without
    workers, random masks in the training step) are seeded for that epoch. The
    epoch comes from the trainer's progress, which a resumed run restores before
    it builds its first iterator.
    """

    def __init__(self, *args: Any, epoch_fn: Callable[[], tuple[int, int, int]] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        kwargs.setdefault("generator", torch.Generator())
        if kwargs.get("worker_init_fn") is None:
            kwargs["worker_init_fn"] = _ignore_stop_signals
        super().__init__(*args, **kwargs)
        self.epoch_fn = epoch_fn
        self._epochs_started = 0

    def __iter__(self):
        import random

        epoch, rank, salt = self.epoch_fn() if self.epoch_fn else (self._epochs_started, 0, 0)
        self._epochs_started += 1
        seed = epoch_seed(epoch, rank, salt)
        # A DistributedSampler orders by its own epoch; Lightning sets it only after the
        # first iterator of a (resumed) run exists.
        for sampler in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return super().__iter__()


class TransformedDataset(Dataset):
    """``(image, label)`` -> ``(transform(image), label)``."""

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


def default_num_workers() -> int:
    """One worker per process on small machines (extra workers steal the model's cores), up to 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class PretrainDataModule(pl.LightningDataModule):
    """Unlabelled views for pretraining, plus labelled eval views for the kNN monitor.

    Args:
        path: DATA: an ``.npz``, an image folder, or a named set (``patterns``,
            ``cifar10``, ``cifar100``, ``stl10``, ``medmnist:<flag>``).
        transform: the method's view pipeline (e.g. ``SimCLRTransform``).
        batch_size: images per process and step; the global batch is
            ``batch_size x devices x num_nodes`` and learning rates scale with it.
        num_workers: DataLoader workers per process (default: half the cores, 1 to 8).
        channels: convert images to 1 or 3 channels (None: keep the data's).
        intensity: 16-bit policy: ``dtype`` range or per-image ``percentile`` window.
        root: where named sets are stored / downloaded.
        download: download named sets that are missing (never in tests).
        strict: image folders: read every file before training and stop with the
            list of unreadable ones (default: skip them, replaced by the next
            readable image, and report how many were skipped).
    """

    def __init__(
        self,
        path: str = "patterns",
        transform: ViewTransform | None = None,
        batch_size: int = 256,
        num_workers: int | None = None,
        channels: Literal[1, 3] | None = None,
        intensity: Intensity = "dtype",
        root: str | None = None,
        download: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.strict = strict
        self._resume: tuple[int, int] | None = None
        self.path = path
        self.transform = transform
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.channels = channels
        self.intensity = intensity
        self.root = root
        self.download = download
        # A method that draws its masks in the loader workers sets this (I-JEPA).
        self.collate_fn: Callable[[list[Any]], Any] | None = None
        self._train: Dataset | None = None

    # -- datasets -------------------------------------------------------------------
    def _open(self, split: Literal["train", "test"]):
        ds = open_dataset(self.path, split, self.root, self.download, self.intensity, self.strict)
        if self.channels is not None:
            ds = TransformedDataset(ds, _ChannelConverter(self.channels))
        return ds

    @property
    def train_dataset(self) -> Dataset:
        if self._train is None:
            self._train = self._open("train")
        return self._train

    def data_channels(self) -> int:
        if self.channels is not None:
            return self.channels
        return int(self.train_dataset[0][0].shape[0])

    def check(self, world_size: int = 1) -> None:
        """Fail before training when the data cannot give full batches."""
        if self.transform is None:
            raise DataError(
                "data.transform is not set: give the method's view pipeline, e.g. selfsup.transforms.SimCLRTransform."
            )
        if self.batch_size < 2:
            raise DataError(
                f"data.batch_size is {self.batch_size}: self-supervised losses compare images in a batch; use at least 2."
            )
        source = unwrap_dataset(self.train_dataset)
        if self.strict and hasattr(source, "scan"):
            source.scan()
        n = len(self.train_dataset)
        if n // world_size < self.batch_size:
            raise DataError(
                f"{self.path} has {n} training images: too few for one full batch of {self.batch_size} "
                f"on each of {world_size} process(es). Lower data.batch_size."
            )

    def setup(self, stage: str) -> None:
        self.check()

    def _epoch_and_rank(self) -> tuple[int, int, int]:
        """(epoch, rank, salt) of the iterator about to start."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 0
        if self._resume is not None:
            # A resumed run builds its first iterator before Lightning restores the loops'
            # progress (the schedules ask for the number of steps): take the checkpoint's.
            (epoch, salt), self._resume = self._resume, None
            return epoch, trainer.global_rank, salt
        # Epochs finished so far: what Lightning also gives the samplers' set_epoch.
        return trainer.fit_loop.epoch_progress.current.processed, trainer.global_rank, 0

    def state_dict(self) -> dict[str, Any]:
        """Where a run resumed from a checkpoint written now starts its random streams:
        the next epoch from its beginning (as an uninterrupted run does), or, inside an
        epoch, that epoch again with fresh streams salted by the step (Lightning
        restarts the epoch's data; the salt keeps it from repeating the same views)."""
        trainer = self.trainer
        if trainer is None:
            return {"next_epoch": 0, "salt": 0}
        salt = trainer.global_step if mid_epoch(trainer) else 0
        return {"next_epoch": next_epoch(trainer), "salt": salt}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = (int(state_dict.get("next_epoch", 0)), int(state_dict.get("salt", 0)))

    def train_dataloader(self) -> DataLoader:
        return EpochSeededLoader(
            TransformedDataset(self.train_dataset, self.transform),
            batch_size=self.batch_size,
            shuffle=True,
            # Every process must gather batches of equal shape.
            drop_last=True,
            num_workers=self.num_workers,
            # Not persistent: each epoch's workers are seeded from the loader's
            # generator, which EpochSeededLoader seeds per epoch, so a resumed run draws
            # the same augmentations as the run it continues.
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            collate_fn=self.collate_fn,
            epoch_fn=self._epoch_and_rank,
        )

    # -- labelled evaluation views (kNN monitor) ---------------------------------------
    def eval_transform(self) -> EvalTransform:
        assert self.transform is not None
        return EvalTransform(self.transform.size, self.transform.mean, self.transform.std)

    def knn_datasets(
        self, max_train: int, max_test: int, seed: int = 0
    ) -> tuple[Dataset, Dataset] | None:
        """Labelled (memory bank, query) datasets with eval views, or None when the data has no labels."""
        try:
            test = self._open("test")
        except DataError:
            return None
        train = self.train_dataset
        if _labels(train) is None or _labels(test) is None:
            return None
        rng = np.random.default_rng(seed)
        transform = self.eval_transform()

        def subset(ds: Dataset, n: int) -> Dataset:
            if len(ds) > n:
                ds = Subset(ds, np.sort(rng.choice(len(ds), n, replace=False)).tolist())
            return TransformedDataset(ds, transform)

        return subset(train, max_train), subset(test, max_test)


def unwrap_dataset(ds: Dataset) -> Dataset:
    while isinstance(ds, TransformedDataset):
        ds = ds.dataset
    return ds


def _labels(ds: Dataset):
    return getattr(unwrap_dataset(ds), "targets", None)


class _ChannelConverter:
    """``(C, H, W)`` -> ``(channels, H, W)``: gray -> RGB by repetition, RGB -> gray by luminance."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return match_channels(image, self.channels)
