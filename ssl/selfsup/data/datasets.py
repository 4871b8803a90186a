"""Datasets: `.npz` arrays, manifests, image/DICOM folders, volumes, torchvision sets, MedMNIST, patterns.

Every dataset yields ``(image, label)`` with ``image`` a ``(C, H, W)`` tensor
(``uint8``; ``float32`` in ``[0, 1]`` for 16-bit data) and ``label`` an int
(-1 when unlabelled), or a ``(K,)`` int64 tensor of 0/1 findings for multi-label
data (:mod:`selfsup.data.labels`). :func:`open_dataset` turns the user's ``DATA``
argument (a path or a name) into one.

16-bit intensity policy: ``intensity="dtype"`` (default) maps the dtype's
full range to ``[0, 1]`` (0..65535); ``intensity="percentile"`` maps each
image's ``[p_low, p_high]`` percentile window to ``[0, 1]`` and clips, which
suits CT/X-ray data that uses a small part of the range.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.pixels import (  # noqa: F401 (the data layer's names, in one place)
    IMAGE_EXTENSIONS,
    UNREADABLE,
    DataError,
    Intensity,
    Reading,
    Split,
    read_image,
    to_tensor_image,
)
from selfsup.data.readers import patterns
from selfsup.data.readers.arrays import ArrayDataset, load_npz
from selfsup.data.readers.folders import ImageFolderDataset

NAMED_DATASETS = ("patterns", "cifar10", "cifar100", "stl10", "medmnist:<flag>")


def default_data_root() -> str:
    return os.environ.get("SELFSUP_DATA", os.path.join(Path.home(), ".cache", "selfsup", "data"))


def open_dataset(
    data: str,
    split: Split,
    root: str | None = None,
    download: bool = False,
    intensity: Intensity = "dtype",
    strict: bool = False,
    reading: Reading | None = None,
) -> Dataset:
    """Turn ``DATA`` into the ``split`` dataset: an ``.npz``, a manifest (``.csv``/``.tsv``),
    shards written by ``selfsup data pack``, a folder of volumes (NIfTI), an image/DICOM folder (``train/<class>/`` and
    ``test/<class>/``, or an unlabelled tree), or a named set. ``reading`` says how
    DICOM files and volumes become pixels (its intensity policy replaces ``intensity``);
    ``strict``: fail on unreadable files instead of skipping them."""
    from selfsup.data.readers.manifest import MANIFEST_SUFFIXES, ManifestDataset

    reading = reading or Reading(intensity=intensity)
    intensity = reading.intensity
    root = root or default_data_root()
    name = data.lower()
    if reading.label_columns and not name.endswith(MANIFEST_SUFFIXES):
        raise DataError(
            f"label_columns {list(reading.label_columns)} applies to manifests (.csv, .tsv) "
            f"only, and {data} is not one: drop label_columns."
        )
    if name == "patterns":
        n, seed = patterns.SPLITS[split]
        images, labels = patterns.generate_patterns(n, seed)
        return ArrayDataset(images, labels, patterns.CLASSES, source="patterns")
    if name in ("cifar10", "cifar100", "stl10"):
        return _torchvision_dataset(name, split, root, download)
    if name.startswith("medmnist:"):
        return _medmnist_download(name.split(":", 1)[1], split, root, download, intensity)
    from selfsup.data.readers.shards import ShardDataset, is_remote, is_shards

    if is_remote(data):  # a pack in an object store
        return ShardDataset(data, split, reading.shard_cache_size, reading.shard_cache)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"Data path {data!r} does not exist. DATA is an .npz file, a manifest (.csv, .tsv), "
            f"a folder of images, DICOM files or volumes, or one of the named sets "
            f"{', '.join(NAMED_DATASETS)}."
        )
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return ManifestDataset(path, split, reading, strict)
        if path.suffix == ".npz":
            return load_npz(path, split, intensity)
        from selfsup.data.readers.volumes import VolumeSliceDataset, is_volume

        if is_volume(path):
            return VolumeSliceDataset([path], reading, source=str(path), strict=strict)
        raise DataError(
            f"{path} is a file but neither an .npz archive, a manifest (.csv, .tsv) nor a "
            "volume; point DATA at one of those or at a folder."
        )
    if is_shards(path):
        return ShardDataset(path, split, reading.shard_cache_size)
    split_dir = path / split
    if split_dir.is_dir():
        return ImageFolderDataset(split_dir, True, strict=strict, reading=reading)
    if split == "test":
        raise DataError(
            f"{path} has no {split}/ folder: evaluation needs {path}/train/<class>/ and "
            f"{path}/test/<class>/, or a manifest with a split column."
        )
    from selfsup.data.readers.volumes import VolumeSliceDataset, list_volumes

    volumes = list_volumes(path)
    if volumes:
        return VolumeSliceDataset(volumes, reading, source=str(path), strict=strict)
    return ImageFolderDataset(path, False, strict=strict, reading=reading)


def read_picture(path: str | os.PathLike, reading: Reading | None = None) -> torch.Tensor:
    """One file the pictures commands draw from (``selfsup attention``, ``reconstruct``) as a
    ``(C, H, W)`` tensor: an image file as :func:`read_image` reads it, or a DICOM file as
    the readers read it (its own window by default; the middle frame of a multi-frame
    file). A file that is neither is one line naming it."""
    from selfsup.data.readers.dicom import (
        DicomUnreadable,
        NotAnImage,
        could_be_dicom,
        frame_count,
        read_dicom_frame,
        read_header,
    )

    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS and could_be_dicom(path):
        try:
            frames = frame_count(read_header(path))
            return read_dicom_frame(path, frames // 2, reading or Reading())
        except (DicomUnreadable, NotAnImage) as e:
            raise DataError(f"--image {path}: {e}.") from None
    try:
        return read_image(path, (reading or Reading()).intensity)
    except UNREADABLE as e:
        raise DataError(
            f"--image {path} is not an image selfsup reads ({type(e).__name__}): give a PNG, "
            "JPEG, TIFF or DICOM file."
        ) from None


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
    ds = load_npz(path, split, intensity)
    names = _medmnist_names(flag)
    if names is not None and ds.labels is not None:
        fits = len(names) == ds.labels.shape[1] if ds.multilabel else len(names) > ds.labels.max()
        if fits:
            ds.classes = names
    return ds


def _medmnist_names(flag: str) -> list[str] | None:
    """The class (finding) names the ``medmnist`` package gives for ``flag`` (its
    ``INFO[flag]["label"]``, ``"0"`` -> name), or None without the package or the names."""
    try:
        import medmnist
    except ImportError:
        return None
    label = getattr(medmnist, "INFO", {}).get(flag, {}).get("label")
    if not isinstance(label, dict):
        return None
    try:
        return [str(label[str(i)]) for i in range(len(label))]
    except KeyError:
        return None
