"""Images held in memory: ``.npz`` archives (selfsup's ``x_*``/``y_*`` layout and MedMNIST's
``*_images``/``*_labels``) and the labels they carry (int or string class names)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.pixels import DataError, Intensity, Split, to_tensor_image


class ArrayDataset(Dataset):
    """Images held in memory as one ``(N, H, W[, C])`` array."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        classes: Sequence[str] | None = None,
        intensity: Intensity = "dtype",
        source: str = "",
    ) -> None:
        if images.ndim == 3:
            images = images[..., None]
        self.images = images
        self.labels = None if labels is None else _one_label_per_image(labels, len(images), source)
        n_classes = int(self.labels.max()) + 1 if self.labels is not None and len(images) else 0
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
        self.intensity = intensity
        self.source = source

    def __len__(self) -> int:
        return len(self.images)

    @property
    def targets(self) -> np.ndarray | None:
        return self.labels

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = -1 if self.labels is None else int(self.labels[index])
        return to_tensor_image(self.images[index], self.intensity), label


def _one_label_per_image(labels: Any, n_images: int, source: str) -> np.ndarray:
    """``(N,)`` or ``(N, 1)`` labels -> ``(N,)`` int64; anything else is refused (never
    flattened: an ``(N, K)`` array read flat would give image i the label ``y.flat[i]``)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n_images:
        raise DataError(
            f"{source or 'The data set'}: labels of shape {labels.shape} for {n_images} images; "
            f"give one class index per image, shape ({n_images},)."
        )
    return labels.astype(np.int64)


def load_npz(path: Path, split: Split, intensity: Intensity = "dtype") -> ArrayDataset:
    """An ``.npz`` with ``x_train``/``y_train``/``x_test``/``y_test`` (uint8 HWC), or
    MedMNIST's own layout (``train_images``, ``train_labels``, ``val_*``, ``test_*``).

    Labels are one per image: int class indices, whole-number floats, or strings
    (class names: the sorted names over every split become 0..K-1, unless a
    ``classes`` array gives their order)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"Cannot read {path} as an .npz archive ({e}).") from e
    keys = set(data.files)
    if {f"{split}_images", f"{split}_labels"} <= keys:
        x_key, y_key = f"{split}_images", f"{split}_labels"
        label_keys = [f"{s}_labels" for s in ("train", "val", "test")]
        images = _array(data, path, x_key)
        if images.ndim == 4 and images.shape[-1] not in (1, 3):
            raise DataError(
                f"{path} holds 3D volumes {images.shape[1:]}: 3D MedMNIST sets are not supported yet."
            )
    else:
        x_key, y_key = f"x_{split}", f"y_{split}"
        label_keys = ["y_train", "y_test"]
        if x_key not in keys:
            raise DataError(
                f"{path} has arrays {sorted(keys)} but no {x_key!r}: selfsup reads npz files with "
                "x_train, y_train, x_test, y_test (uint8 images, N x H x W x C), or MedMNIST's "
                "train_images / train_labels layout."
            )
        images = _array(data, path, x_key)
    _check_images(images, path, x_key)
    if y_key not in keys:
        return ArrayDataset(images, None, None, intensity, source=str(path))
    present = [k for k in label_keys if k in keys]
    labels, classes = _read_labels(data, path, y_key, x_key, len(images), present)
    return ArrayDataset(images, labels, classes, intensity, source=str(path))


def _array(data: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return data[key]
    except ValueError as e:  # object arrays need pickle, which selfsup never loads
        raise DataError(
            f"{path}: {key} is an object array, which selfsup does not unpickle: save it as a "
            "str or int array (labels) or a uint8 array (images), e.g. np.asarray(y, dtype=str)."
        ) from e


def _read_labels(
    data: np.lib.npyio.NpzFile,
    path: Path,
    key: str,
    images_key: str,
    n_images: int,
    label_keys: list[str],
) -> tuple[np.ndarray, list[str] | None]:
    """``data[key]`` as int class indices ``(N,)``, and the class names (``None``: the
    file has none). Refuses what would otherwise be misread: several labels per image,
    a count that differs from the images', fractional floats, mixed kinds of labels."""
    y = _array(data, path, key)
    if y.ndim == 2 and y.shape[1] > 1:
        raise DataError(
            f"{path}: {key} has {y.shape[0]}x{y.shape[1]} labels (multi-label, several per "
            "image); selfsup reads one label per image for now (multi-label evaluation is "
            f"planned): keep one column, e.g. {key}[:, k], or drop the labels to pretrain only."
        )
    if y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {key} has shape {y.shape}; give one label per image, shape (N,).")
    if len(y) != n_images:
        raise DataError(
            f"{path}: {key} has {len(y)} labels for {n_images} images in {images_key}; "
            "give one label per image, in the images' order."
        )
    names = [str(c) for c in _array(data, path, "classes")] if "classes" in data.files else None
    if y.dtype.kind in "US":
        return _string_labels(data, path, key, y, label_keys, names)
    if y.dtype.kind == "f":
        bad = y[~np.isfinite(y) | (y != np.round(y))]
        if len(bad):
            raise DataError(
                f"{path}: {key} holds float labels that are not whole numbers (e.g. {bad[0]}): "
                "selfsup reads one class per image; save class indices as ints (or names as strings)."
            )
    elif y.dtype.kind not in "biu":
        raise DataError(
            f"{path}: {key} has dtype {y.dtype}; save labels as int class indices or str class names."
        )
    if names is not None and len(y) and int(y.max()) >= len(names):
        raise DataError(
            f"{path}: {key} has class index {int(y.max())} but the classes array names only "
            f"{len(names)} classes; give one name per class index."
        )
    return y.astype(np.int64), names


def _string_labels(
    data: np.lib.npyio.NpzFile,
    path: Path,
    key: str,
    y: np.ndarray,
    label_keys: list[str],
    names: list[str] | None,
) -> tuple[np.ndarray, list[str]]:
    """Class names -> indices, the same in every split: the sorted set of the names over
    all splits (or the file's own ``classes`` order)."""
    found: set[str] = set()
    for other in label_keys:
        labels = _array(data, path, other)
        if labels.dtype.kind not in "US":
            raise DataError(
                f"{path}: {key} holds class names (strings) but {other} holds {labels.dtype} "
                "values; give every split labels of one kind."
            )
        found.update(labels.astype(str).reshape(-1).tolist())
    classes = sorted(found)
    if names is not None:
        missing = sorted(found - set(names))
        if missing:
            raise DataError(
                f"{path}: labels {missing[:5]} are not in the classes array; add them to it, "
                "or drop the classes array to use the sorted label names."
            )
        classes = names
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[name] for name in y.astype(str).tolist()], dtype=np.int64), classes


def _check_images(images: np.ndarray, path: Path, key: str) -> None:
    if images.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"{path}: {key} has dtype {images.dtype}; selfsup expects uint8 (or uint16) pixels. "
            f"Convert with (x * 255).round().astype(np.uint8) if your images are floats in [0, 1]."
        )
    if not len(images):
        raise DataError(f"{path}: {key} holds no images; give at least one image per split.")
    if images.ndim == 3:
        return  # (N, H, W): grayscale
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = (
            " It looks channels-first (N, C, H, W): use x.transpose(0, 2, 3, 1)."
            if images.ndim == 4 and images.shape[1] in (1, 3)
            else " 3D volumes are not supported yet."
            if images.ndim >= 4
            else ""
        )
        raise DataError(
            f"{path}: {key} has shape {images.shape}; expected (N, H, W, C) with C = 1 or 3.{hint}"
        )
