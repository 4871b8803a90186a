"""The LightningDataModule that pairs a dataset with a method's view pipeline.

Its training loader draws every random number from the run's seeded streams
(:mod:`selfsup.data.streams`), so resumed runs are exact.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data.datasets import DataError, Intensity, Reading, open_dataset
from selfsup.data.device_views import DeviceViews, LoadTransform, default_load_size, with_views
from selfsup.data.streams import (
    EpochSeededLoader,
    SeededTransforms,
    TransformedDataset,
    resume_point,
    seed_step,
)
from selfsup.transforms import EvalTransform, ViewTransform, match_channels


def default_num_workers() -> int:
    """One worker per process on small machines (extra workers steal the model's cores), up to 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class PretrainDataModule(pl.LightningDataModule):
    """The data of every command: the ``data:`` block of a config and the ``--data.*``
    options, for ``selfsup pretrain`` and every evaluator alike, so one block serves both.

    Pretraining draws unlabelled views from it (and labelled eval views for the kNN
    monitor); the evaluators open its splits (:meth:`open`) with the checkpoint's own
    eval transform and channel count, so ``transform`` and ``channels`` there are the
    pretraining's and are not used.

    Args:
        path: DATA: an ``.npz``, a manifest (``.csv``/``.tsv``), an image folder, a
            DICOM tree, a folder of volumes, or a named set (``patterns``, ``cifar10``,
            ``cifar100``, ``stl10``, ``medmnist:<flag>``).
        transform: pretraining: the method's view pipeline (e.g. ``SimCLRTransform``).
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
        window: DICOM and volumes: none for the file's own window (else the intensity
            policy); ``percentile``; a CT preset (``lung``, ``mediastinum``, ``bone``,
            ``brain``, ``abdomen``); or ``center,width`` in the modality's units (HU for CT;
            a negative centre is written ``--data.window=-600,1500``).
        frames: multi-frame DICOM: ``all`` (each frame is an image) or ``middle``.
        slice_axis: volumes: the axis slices are cut along after reorientation to RAS.
        slice_context: volumes: 0 reads one slice; k reads 2k + 1 adjacent slices as
            channels (1: the 2.5D input of three slices).
        slices_per_volume: volumes: slices drawn per volume and epoch.
        foreground_threshold: volumes: a drawn slice with less than this share of its
            pixels above the volume's lowest intensity is drawn again.
        volumes_4d: 4D volumes: ``all`` (each 3D volume counts as one) or ``first``.
        square_pixels: volumes: resample each slice to square pixels.
        volume_cache: volumes: decoded volumes kept in memory per process (or worker).
        label_columns: manifests: the 0/1 columns that are the labels, one finding each
            (multi-label; the kNN monitor then reports macro AUROC).
        shard_cache: shards in an object store (``s3://...``): the local cache folder.
        shard_cache_size: shards: the most disk the cached chunks take (``50GB``).
        device_augment: pretraining: the workers only decode and resize to ``load_size``,
            and the views are made on the accelerator, per sample (kornia;
            :mod:`selfsup.data.device_views`), with the CPU pipeline's distributions.
        load_size: with ``device_augment``: the square the workers resize each image to
            (default: the largest view size x 8/7).
    """

    def __init__(
        self,
        path: str | None = None,
        transform: ViewTransform | None = None,
        batch_size: int = 256,
        num_workers: int | None = None,
        channels: Literal[1, 3] | None = None,
        intensity: Intensity = "dtype",
        root: str | None = None,
        download: bool = False,
        strict: bool = False,
        window: str | None = None,
        frames: Literal["all", "middle"] = "all",
        slice_axis: Literal["axial", "coronal", "sagittal"] = "axial",
        slice_context: int = 0,
        slices_per_volume: int = 8,
        foreground_threshold: float = 0.05,
        volumes_4d: Literal["all", "first"] = "all",
        square_pixels: bool = False,
        volume_cache: int = 4,
        label_columns: list[str] | None = None,
        shard_cache: str | None = None,
        shard_cache_size: str = "50GB",
        device_augment: bool = False,
        load_size: int | None = None,
    ) -> None:
        super().__init__()
        #: The options as given (the view pipeline aside): what a job passes on as a
        #: ``data:`` block (``selfsup launch probe``).
        self.options = {k: v for k, v in locals().items() if k not in ("self", "transform", "__class__")}  # fmt: skip
        self.reading = Reading(
            intensity, window, frames, slice_axis, slice_context, slices_per_volume,
            foreground_threshold, volumes_4d, square_pixels, volume_cache,
            None if label_columns is None else tuple(label_columns), shard_cache, shard_cache_size,
        )  # fmt: skip
        self.strict = strict
        # (epoch, batches of it trained on) of a checkpoint being resumed.
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
        self.device_augment = device_augment
        self.load_size = load_size
        self._device_views: DeviceViews | None = None
        self._train: Dataset | None = None

    # -- datasets -------------------------------------------------------------------
    def open(self, split: Literal["train", "val", "test"]) -> Dataset:
        """One split as the files give it (no view pipeline, no channel conversion)."""
        if self.path is None:
            raise DataError("data.path is not set: give --data.path DATA (an .npz, a manifest, "
                            "an image folder, a DICOM tree, volumes, or a named set).")  # fmt: skip
        return open_dataset(self.path, split, self.root, self.download, strict=self.strict,
                            reading=self.reading)  # fmt: skip

    def _open(self, split: Literal["train", "test"]):
        ds = self.open(split)
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
        """(epoch, rank, batches to skip) of the iterator about to start."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 0
        if self._resume is not None:
            # A resumed run builds its first iterator before Lightning restores the loops'
            # progress (the schedules ask for the number of steps): take the checkpoint's.
            (epoch, skip), self._resume = self._resume, None
            return epoch, trainer.global_rank, skip
        # Epochs finished so far: what Lightning also gives the samplers' set_epoch.
        return trainer.fit_loop.epoch_progress.current.processed, trainer.global_rank, 0

    def state_dict(self) -> dict[str, Any]:
        """Where a run resumed from a checkpoint written now continues: the epoch, and
        how many of its batches were trained on (0 at an epoch's end)."""
        epoch, batches = resume_point(self.trainer) if self.trainer is not None else (0, 0)
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Checkpoints from before mid-epoch resumption hold only "next_epoch" (and a salt).
        epoch = state_dict.get("epoch", state_dict.get("next_epoch", 0))
        self._resume = (int(epoch), int(state_dict.get("batches", 0)))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Lightning calls this right before each training step, after the batch was
        # loaded (loops/training_epoch_loop.py, advance()); the batch's index in the
        # epoch is the number of batches counted ready so far.
        trainer = self.trainer
        if trainer is not None and trainer.training:
            index = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            seed_step(trainer.current_epoch, index, trainer.global_rank)
            if self.device_augment:  # the views, from the step's seeded streams
                if self._device_views is None:
                    self._device_views = DeviceViews(self.transform)
                batch = with_views(batch, self._device_views)
        return batch

    def worker_transform(self) -> Callable[[torch.Tensor], Any]:
        """What the training loader's workers do to an image: the views, or with
        ``device_augment`` only the resize to ``load_size``."""
        if not self.device_augment:
            return self.transform
        return LoadTransform(self.load_size or default_load_size(self.transform))

    def train_dataloader(self) -> DataLoader:
        return EpochSeededLoader(
            SeededTransforms(self.train_dataset, self.worker_transform()),
            batch_size=self.batch_size,
            shuffle=True,
            # Every process must gather batches of equal shape.
            drop_last=True,
            num_workers=self.num_workers,
            # Not persistent: each epoch's workers get that epoch's dataset (its seeds).
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
