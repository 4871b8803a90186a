"""Datasets: `.npz` arrays, image folders, torchvision sets, MedMNIST, built-in patterns set.

Every dataset yields ``(image, label)`` with ``image`` a ``(C, H, W)`` tensor
(``uint8``; ``float32`` in ``[0, 1]`` for 16-bit data) and ``label`` an int
(-1 when unlabelled). :func:`open_dataset` turns the user's ``DATA`` argument
(a path or a name) into one.

16-bit intensity policy: ``intensity="dtype"`` (default) maps the dtype's
full range to ``[0, 1]`` (0..65535); ``intensity="percentile"`` maps each
image's ``[p_low, p_high]`` percentile window to ``[0, 1]`` and clips, which
suits CT/X-ray data that uses a small part of the range.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from selfsup.data import patterns
from selfsup.errors import ConfigError

Split = Literal["train", "test"]
Intensity = Literal["dtype", "percentile"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NAMED_DATASETS = ("patterns", "cifar10", "cifar100", "stl10", "medmnist:<flag>")


class DataError(ConfigError):
    """The data the user pointed at cannot be used; the message names the fix."""


def default_data_root() -> str:
    return os.environ.get("SELFSUP_DATA", os.path.join(Path.home(), ".cache", "selfsup", "data"))


def to_tensor_image(
    array: np.ndarray, intensity: Intensity = "dtype", window: tuple[float, float] = (0.5, 99.5)
) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` uint8/uint16 array -> ``(C, H, W)`` tensor (see module doc)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if array.dtype in (np.uint16, np.int32, np.int16, np.float32, np.float64):
        x = array.astype(np.float32)
        if intensity == "percentile":
            lo, hi = np.percentile(x, window)
            x = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        elif array.dtype in (np.float32, np.float64):
            x = np.clip(x, 0.0, 1.0)
        else:
            info = np.iinfo(array.dtype)
            x = (x - max(info.min, 0)) / (info.max - max(info.min, 0))
            x = np.clip(x, 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
    raise DataError(f"Unsupported pixel dtype {array.dtype}: use uint8 or uint16 images.")


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


def read_image(path: str | Path, intensity: Intensity = "dtype") -> torch.Tensor:
    """An image file -> ``(C, H, W)`` tensor: uint8 for 8-bit files, float in [0, 1] for
    16-bit ones (after the intensity policy); gray stays 1 channel, colour becomes RGB."""
    with Image.open(path) as im:
        if im.mode.startswith("I"):  # 16-bit ("I;16*") or 32-bit integer grayscale
            array = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        elif im.mode in ("L", "RGB"):
            array = np.asarray(im)
        elif im.mode == "LA":
            array = np.asarray(im.convert("L"))
        else:  # RGBA, P, CMYK, ...
            array = np.asarray(im.convert("RGB"))
    return to_tensor_image(array, intensity)


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(channels, H, W)``: gray -> RGB by repetition, RGB -> gray by
    ITU-R 601 luminance (a gray file in a colour folder, or the other way round)."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1:
        return image.expand(channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        gray = (image.float() * weights).sum(0, keepdim=True)
        return gray.round().to(image.dtype) if image.dtype == torch.uint8 else gray
    raise DataError(f"Cannot convert {c}-channel images to {channels} channels.")


#: What reading a broken file raises: PIL's UnidentifiedImageError (not an image,
#: zero bytes) and "image file is truncated" are OSErrors; damaged headers raise the others.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class ImageFolderDataset(Dataset):
    """Image files on disk: labelled ``<root>/<class>/*`` or unlabelled (any files under root).

    A file that cannot be read (corrupt, truncated, empty, not an image) is replaced by
    the next readable one, so batches keep their size (gathered batches must match
    across processes) and one bad file never stops a run; :meth:`skipped` lists them
    (flags in shared memory, so DataLoader workers' findings reach the main process).
    ``strict=True`` makes :meth:`scan` (called before training) fail with every bad
    file instead. Unusual modes are converted, not skipped: CMYK, palette and RGBA
    become RGB, 16-bit follows the intensity policy, gray stays one channel.
    """

    def __init__(
        self, root: str | Path, labelled: bool, intensity: Intensity = "dtype", strict: bool = False
    ) -> None:
        root = Path(root)
        self.intensity = intensity
        self.strict = strict
        self.source = str(root)
        if labelled:
            self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
            self.files, labels = [], []
            for label, cls in enumerate(self.classes):
                for f in sorted((root / cls).rglob("*")):
                    if f.suffix.lower() in IMAGE_EXTENSIONS:
                        self.files.append(f)
                        labels.append(label)
            self.labels: np.ndarray | None = np.asarray(labels, dtype=np.int64)
        else:
            self.classes = []
            self.files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            self.labels = None
        if not self.files:
            raise DataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}.")
        self.bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()
        first, _ = self._readable(0)
        self.channels = first.shape[0]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def targets(self) -> np.ndarray | None:
        return self.labels

    def _read(self, index: int) -> torch.Tensor:
        return read_image(self.files[index], self.intensity)

    def _readable(self, index: int) -> tuple[torch.Tensor, int]:
        """The image at ``index``, or at the next index whose file reads."""
        n = len(self.files)
        for step in range(n):
            i = (index + step) % n
            if self.bad[i]:
                continue
            try:
                return self._read(i), i
            except UNREADABLE:
                self.bad[i] = True
        raise DataError(
            f"None of the {n} image files under {self.source} can be read (corrupt, empty or "
            "not images): replace them with readable images."
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label, _ = self.read_item(index)
        return image, label

    def read_item(self, index: int) -> tuple[torch.Tensor, int, int]:
        """``(image, label, source)``: ``source`` is the index actually read, ``index``
        itself unless that file is unreadable (then the next readable one's; evaluation
        uses it to drop the stand-ins rather than count an image twice)."""
        image, i = self._readable(index)
        label = -1 if self.labels is None else int(self.labels[i])
        return match_channels(image, self.channels), label, i

    def skipped(self) -> list[str]:
        """The files found unreadable so far (by any worker)."""
        return [str(self.files[i]) for i in self.bad.nonzero().flatten().tolist()]

    def scan(self) -> None:
        """Read every file; raise a DataError listing all unreadable ones."""
        broken = []
        for i, f in enumerate(self.files):
            try:
                self._read(i)
            except UNREADABLE as e:
                broken.append(f"{f} ({type(e).__name__}: {e})")
        if broken:
            listing = "\n  ".join(broken)
            raise DataError(
                f"{len(broken)} of {len(self.files)} files under {self.source} cannot be read "
                f"(data.strict is on):\n  {listing}\nRemove or replace them, or drop "
                "--data.strict to skip them."
            )


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


def open_dataset(
    data: str,
    split: Split,
    root: str | None = None,
    download: bool = False,
    intensity: Intensity = "dtype",
    strict: bool = False,
) -> ArrayDataset | ImageFolderDataset:
    """Turn ``DATA`` (an ``.npz``, an image folder, or a named set) into the ``split`` dataset
    (``strict``: image folders fail on unreadable files instead of skipping them)."""
    root = root or default_data_root()
    name = data.lower()
    if name == "patterns":
        n, seed = patterns.SPLITS[split]
        images, labels = patterns.generate_patterns(n, seed)
        return ArrayDataset(images, labels, patterns.CLASSES, source="patterns")
    if name in ("cifar10", "cifar100", "stl10"):
        return _torchvision_dataset(name, split, root, download)
    if name.startswith("medmnist:"):
        return _medmnist_download(name.split(":", 1)[1], split, root, download, intensity)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"Data path {data!r} does not exist. DATA is an .npz file, an image folder, "
            f"or one of the named sets {', '.join(NAMED_DATASETS)}."
        )
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(
                f"{path} is a file but not an .npz archive; point DATA at an .npz or an image folder."
            )
        return load_npz(path, split, intensity)
    split_dir = path / split
    if split_dir.is_dir():
        return ImageFolderDataset(split_dir, labelled=True, intensity=intensity, strict=strict)
    if split == "test":
        raise DataError(
            f"{path} has no {split}/ folder: evaluation needs {path}/train/<class>/ and {path}/test/<class>/."
        )
    return ImageFolderDataset(path, labelled=False, intensity=intensity, strict=strict)


def _torchvision_dataset(name: str, split: Split, root: str, download: bool) -> ArrayDataset:
    import torchvision.datasets as tvd

    try:
        if name == "stl10":
            # Pretraining uses the 100k unlabelled images too.
            ds = tvd.STL10(
                root, split="train+unlabeled" if split == "train" else "test", download=download
            )
            images, labels = ds.data.transpose(0, 2, 3, 1), ds.labels
            if split == "train":  # unlabelled images carry label -1; keep them unlabelled
                return ArrayDataset(images, None, list(ds.classes), source=name)
            return ArrayDataset(images, labels, list(ds.classes), source=name)
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        ds = cls(root, train=split == "train", download=download)
    except RuntimeError as e:
        raise DataError(
            f"{name} is not in {root} ({e}). Add --data.download true on a machine with internet."
        ) from e
    return ArrayDataset(np.asarray(ds.data), np.asarray(ds.targets), list(ds.classes), source=name)


def _medmnist_download(
    flag: str, split: Split, root: str, download: bool, intensity: Intensity
) -> ArrayDataset:
    path = Path(root) / f"{flag}.npz"
    if not path.exists():
        try:
            import medmnist
        except ImportError as e:
            raise DataError(
                f"{path} is missing; to download MedMNIST sets, pip install medmnist."
            ) from e
        if flag not in medmnist.INFO:
            raise DataError(
                f"Unknown MedMNIST flag {flag!r}; known: {', '.join(sorted(medmnist.INFO))}."
            )
        if not download:
            raise DataError(
                f"{path} is missing; add --data.download true on a machine with internet."
            )
        info = medmnist.INFO[flag]
        getattr(medmnist, info["python_class"])(split="train", root=root, download=True)
        if not path.exists():
            raise DataError(f"MedMNIST wrote no {path}; check the download under {root}.")
    return load_npz(path, split, intensity)
