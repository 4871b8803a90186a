"""Images held in memory: ``.npz`` archives (selfsup's ``x_*``/``y_*`` layout and MedMNIST's
``*_images``/``*_labels``), the labels they carry (int or string class names, or 0/1
findings, several per image) and their patient/study groups."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.labels import Labelled, as_groups, finding_names, findings_matrix
from selfsup.data.pixels import DataError, Intensity, Split, to_tensor_image


class ArrayDataset(Labelled, Dataset):
    """Images held in memory as one ``(N, H, W[, C])`` array, with ``(N,)`` class indices
    or ``(N, K)`` 0/1 findings (or no labels), and optionally a group id per image."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        classes: Sequence[str] | None = None,
        intensity: Intensity = "dtype",
        source: str = "",
        groups: np.ndarray | None = None,
    ) -> None:
        if images.ndim == 3:
            images = images[..., None]
        self.images = images
        where = source or "The data set"
        self.labels = None if labels is None else _labels_per_image(labels, len(images), where)
        if self.multilabel:
            self.classes = finding_names(classes, self.labels.shape[1], where)
        else:
            n = int(self.labels.max()) + 1 if self.labels is not None and len(images) else 0
            self.classes = list(classes) if classes is not None else [str(i) for i in range(n)]
        self.groups = None if groups is None else as_groups(groups, len(images), f"{where}: groups")
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        return to_tensor_image(self.images[index], self.intensity), self.label_at(index)


def _labels_per_image(labels: Any, n_images: int, where: str) -> np.ndarray:
    """``(N,)`` or ``(N, 1)`` labels -> ``(N,)`` int64; ``(N, K)`` 0/1 findings -> ``(N, K)``
    int64; anything else is refused (never flattened: an ``(N, K)`` array read flat would
    give image i the label ``y.flat[i]``)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or len(labels) != n_images:
        raise DataError(
            f"{where}: labels of shape {labels.shape} for {n_images} images; give one class "
            f"index per image, shape ({n_images},), or 0/1 findings, shape ({n_images}, K)."
        )
    if labels.ndim == 2:
        return findings_matrix(labels, f"{where}: labels")
    return labels.astype(np.int64)


def load_npz(path: Path, split: Split, intensity: Intensity = "dtype") -> ArrayDataset:
    """An ``.npz`` with ``x_train``/``y_train``/``x_test``/``y_test`` (uint8 HWC), or
    MedMNIST's own layout (``train_images``, ``train_labels``, ``val_*``, ``test_*``).

    Labels are one per image: int class indices, whole-number floats, or strings
    (class names: the sorted names over every split become 0..K-1, unless a
    ``classes`` array gives their order); or ``(N, K)`` findings in {0, 1}, several per
    image (a ``classes`` array then names the K columns). An optional ``groups_<split>``
    array gives each image's patient or study (str or int ids)."""
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
    groups, g_key = None, f"groups_{split}"
    if g_key in keys:
        groups = as_groups(_array(data, path, g_key), len(images), f"{path}: {g_key}")
    if y_key not in keys:
        return ArrayDataset(images, None, None, intensity, source=str(path), groups=groups)
    present = [k for k in label_keys if k in keys]
    labels, classes = _read_labels(data, path, y_key, x_key, len(images), present)
    return ArrayDataset(images, labels, classes, intensity, source=str(path), groups=groups)


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
    """``data[key]`` as int class indices ``(N,)`` or 0/1 findings ``(N, K)``, and the
    class names (``None``: the file has none). Refuses what would otherwise be misread:
    a count that differs from the images', fractional floats, mixed kinds of labels,
    findings other than 0/1, splits with different findings."""
    y = _array(data, path, key)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise DataError(
            f"{path}: {key} has shape {y.shape}; give one label per image, shape (N,), or "
            "0/1 findings, shape (N, K)."
        )
    if len(y) != n_images:
        raise DataError(
            f"{path}: {key} has {len(y)} labels for {n_images} images in {images_key}; "
            "give one label per image, in the images' order."
        )
    names = [str(c) for c in _array(data, path, "classes")] if "classes" in data.files else None
    _same_kind(data, path, key, y, label_keys)
    if y.ndim == 2:
        findings = findings_matrix(y, f"{path}: {key}")
        return findings, finding_names(names, y.shape[1], f"{path}: the classes array")
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


def _same_kind(
    data: np.lib.npyio.NpzFile, path: Path, key: str, y: np.ndarray, label_keys: list[str]
) -> None:
    """Every split has one label per image, or every split the same K finding columns."""
    width = y.shape[1] if y.ndim == 2 else None
    for other in label_keys:
        shape = _array(data, path, other).shape
        theirs = shape[1] if len(shape) == 2 and shape[1] > 1 else None
        if theirs != width:
            mine = f"{width} finding columns" if width else "one label per image"
            them = f"{theirs} finding columns" if theirs else "one label per image"
            raise DataError(
                f"{path}: {key} has {mine} but {other} has {them} (shape {shape}); give every "
                "split the same findings, one column each, in the same order."
            )


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
