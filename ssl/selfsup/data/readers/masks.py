"""The readers of images with masks behind :func:`selfsup.data.segmentation.open_segmentation`:
an ``.npz`` (``m_<split>``), a folder (``images/`` + ``masks/``, PNG label maps or DICOM
SEG objects) and a manifest (a ``mask`` column: PNG, DICOM SEG or a NIfTI label volume).
The layouts are described in :mod:`selfsup.data.segmentation`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from selfsup.data.labels import as_groups
from selfsup.data.pixels import DataError, Intensity, Reading, Split, to_tensor_image


class SegmentationSet(Dataset):
    """``(image (C, H, W), mask (H, W) int64)`` pairs with their class names, groups
    (patients; None when every image is its own) and pixel spacing (mm; None unknown).

    ``read(i)`` gives image ``i``; the masks are held in memory (``masks[i]``)."""

    def __init__(
        self,
        read: Callable[[int], torch.Tensor],
        masks: list[np.ndarray],
        classes: Sequence[str],
        groups: np.ndarray | None = None,
        spacing: list[tuple[float, float] | None] | None = None,
        files: list[str] | None = None,
        source: str = "",
    ) -> None:
        self.read, self.masks, self.classes = read, masks, list(classes)
        self.groups, self.files, self.source = groups, files, source
        self.spacing = spacing if spacing is not None else [None] * len(masks)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.read(index), torch.from_numpy(self.masks[index].astype(np.int64))

    @property
    def spacing_known(self) -> bool:
        return all(s is not None for s in self.spacing)

    def summary(self) -> dict[str, Any]:
        """What ``selfsup data inspect`` says of the masks: their classes, each class's
        share of all mask pixels, the images lacking each foreground class, the spacing."""
        counts = np.zeros(len(self.classes))
        for m in self.masks:
            counts += np.bincount(m.reshape(-1), minlength=len(self.classes))[: len(self.classes)]
        absent = len(self.masks) - self.presence().sum(0)
        known = [s for s in self.spacing if s is not None]
        return {
            "mask_classes": self.classes,
            "class_pixel_fraction": {
                c: round(float(n / counts.sum()), 4) for c, n in zip(self.classes, counts)
            },
            "images_without_class": {c: int(n) for c, n in zip(self.classes[1:], absent)},
            "pixel_spacing_mm": (
                f"{len(known)} of {len(self.masks)} images"
                + (f", e.g. {known[0][0]:g} x {known[0][1]:g}" if known else "")
            ),
        }

    def images(self) -> ImagesOnly:
        """The images alone, as the feature extraction reads them (``(image, index)``)."""
        return ImagesOnly(self)

    def presence(self) -> np.ndarray:
        """``(N, K-1)`` 0/1: which foreground classes each mask holds (what the validation
        split and the label fractions are stratified by)."""
        k = len(self.classes)
        return np.stack([np.isin(np.arange(1, k), np.unique(m)) for m in self.masks]).astype(int)


class ImagesOnly(Dataset):
    """The images of a :class:`SegmentationSet` as ``(image, index)`` pairs, with the set's
    files (the feature cache's key)."""

    def __init__(self, data: SegmentationSet) -> None:
        self.data = data
        self.files = data.files
        self.content_id = getattr(data, "content_id", None)  # shards: the feature cache's key

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data.read(index), index


def check_mask(
    mask: np.ndarray, image_size: tuple[int, int], n_classes: int, where: str
) -> np.ndarray:
    """``mask`` as an ``(H, W)`` integer map checked against its image and its classes."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DataError(f"{where}: a mask of shape {mask.shape}; give one (H, W) map of class "
                        "indices per image.")  # fmt: skip
    if tuple(mask.shape) != tuple(image_size):
        raise DataError(
            f"{where}: the mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
            f"{image_size[0]}x{image_size[1]}; give each image a mask of its own size."
        )
    if mask.dtype.kind == "f":
        if not np.all(mask == np.round(mask)):
            raise DataError(f"{where}: the mask holds fractional values; give class indices "
                            "(integers, 0 the background).")  # fmt: skip
        mask = mask.astype(np.int64)
    elif mask.dtype.kind not in "biu":
        raise DataError(f"{where}: a mask of dtype {mask.dtype}; give integer class indices.")
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"{where}: mask value {bad}, but the classes name only 0..{n_classes - 1}; name "
            "every class (mask_classes in an npz, classes.txt beside a folder), one per index."
        )
    return mask.astype(np.uint8 if n_classes <= 256 else np.int32)


class _ArrayImages:
    """Image ``i`` of an array (picklable, for spawned workers)."""

    def __init__(self, images: np.ndarray, intensity: Intensity) -> None:
        self.images, self.intensity = images, intensity

    def __call__(self, i: int) -> torch.Tensor:
        return to_tensor_image(self.images[i], self.intensity)


class _FileImages:
    """Image ``i`` of a list of files."""

    def __init__(self, files: list[str], reading: Reading) -> None:
        self.files, self.reading = files, reading

    def __call__(self, i: int) -> torch.Tensor:
        return _read_with_spacing(Path(self.files[i]), self.reading)[0]


class _DatasetImages:
    """Image ``i`` of a dataset of ``(image, label)`` pairs."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __call__(self, i: int) -> torch.Tensor:
        return self.dataset[i][0]


def read_npz(path: Path, split: Split, intensity: Intensity) -> SegmentationSet:
    from selfsup.data.readers.arrays import _array, _check_images

    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"Cannot read {path} as an .npz archive ({e}).") from e
    x_key, m_key = f"x_{split}", f"m_{split}"
    if x_key not in data.files or m_key not in data.files:
        raise DataError(f"{path} has arrays {sorted(data.files)} but no {x_key!r} and {m_key!r}: "
                        "segmentation reads images x_<split> with masks m_<split> (N x H x W "
                        "class indices).")  # fmt: skip
    images = _array(data, path, x_key)
    _check_images(images, path, x_key)
    if "mask_classes" in data.files:
        classes = [str(c) for c in _array(data, path, "mask_classes")]
    elif "classes" in data.files and not any(k.startswith("y_") for k in data.files):
        classes = [str(c) for c in _array(data, path, "classes")]
    else:
        raise DataError(f"{path}: name the mask classes, index 0 the background, in a "
                        "mask_classes array (e.g. ['background', 'lung']).")  # fmt: skip
    raw = _array(data, path, m_key)
    if len(raw) != len(images):
        raise DataError(f"{path}: {m_key} holds {len(raw)} masks for {len(images)} images in "
                        f"{x_key}; give one mask per image, in the images' order.")  # fmt: skip
    size = images.shape[1:3]
    masks = [check_mask(m, size, len(classes), f"{path}: {m_key}[{i}]") for i, m in enumerate(raw)]
    groups = None
    if f"groups_{split}" in data.files:
        groups = as_groups(_array(data, path, f"groups_{split}"), len(images),
                           f"{path}: groups_{split}")  # fmt: skip
    spacing = _npz_spacing(data, path, split, len(images))
    channels_last = images if images.ndim == 4 else images[..., None]
    return SegmentationSet(_ArrayImages(channels_last, intensity), masks,
                           classes, groups, spacing, source=str(path))  # fmt: skip


def _npz_spacing(data: Any, path: Path, split: str, n: int) -> list | None:
    key = f"spacing_{split}" if f"spacing_{split}" in data.files else "spacing"
    if key not in data.files:
        return None
    s = np.asarray(data[key], dtype=float)
    if s.shape == (2,):
        s = np.tile(s, (n, 1))
    if s.shape != (n, 2) or not np.all(s > 0):
        raise DataError(f"{path}: {key} has shape {s.shape}; give the pixel size in mm, "
                        f"(rows, columns), as (2,) for all images or ({n}, 2), all > 0.")  # fmt: skip
    return [(float(a), float(b)) for a, b in s]


def read_folders(root: Path, split: Split, reading: Reading) -> SegmentationSet:
    from selfsup.data.readers.dicom_seg import SegIndex
    from selfsup.data.readers.folders import list_images

    image_dir, mask_dir = root / split / "images", root / split / "masks"
    images = list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir} holds no images.")
    found = list_images(mask_dir)
    segs = SegIndex(found)  # DICOM SEG objects: matched by the images they reference
    mask_files = {f.relative_to(mask_dir).with_suffix(""): f for f in found
                  if f not in segs.files}  # fmt: skip
    classes = _folder_classes(root) or (segs.classes() if segs else None)
    masks, spacing, files = [], [], []
    for f in images:
        rel = f.relative_to(image_dir).with_suffix("")
        image, pixel_size = _read_with_spacing(f, reading)
        if rel in mask_files:
            mask, where = _read_label_map(mask_files[rel]), str(mask_files[rel])
        else:
            mask, where = (segs.mask_for(f, None) if segs else None), f"the SEG of {f}"
        if mask is None:
            raise DataError(f"{f} has no mask: put one at {mask_dir / rel}.png (same stem), or "
                            f"a DICOM SEG that references it under {mask_dir}.")  # fmt: skip
        masks.append(check_mask(mask, tuple(image.shape[1:]), len(classes) if classes else 2**16,
                                where))  # fmt: skip
        spacing.append(pixel_size)
        files.append(str(f))
    if classes is None:  # unnamed: background and one class per index found
        k = max(int(m.max()) for m in masks) + 1
        classes = ["background", *[str(i) for i in range(1, max(k, 2))]]
    groups = np.array([str(Path(f).relative_to(image_dir).parent) for f in files])
    has_groups = any(g != "." for g in groups)  # patient sub-folders, when the tree has them
    return SegmentationSet(
        _FileImages(files, reading), masks, classes,
        groups if has_groups else None, spacing, files, source=str(root),
    )  # fmt: skip


def _folder_classes(root: Path) -> list[str] | None:
    names = root / "classes.txt"
    if not names.is_file():
        return None
    return [line.strip() for line in names.read_text().splitlines() if line.strip()]


def _read_label_map(path: Path) -> np.ndarray:
    """A mask file's class indices: a PNG label map (8 or 16 bit, or a palette image, whose
    indices are the classes), never rescaled as image intensities are."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                raise DataError(f"{path} is a colour image; save masks as single-channel label "
                                "maps (mode L, I;16 or P) of class indices.")  # fmt: skip
            return np.asarray(im)
    except OSError as e:
        raise DataError(f"{path}: cannot read the mask ({e}).") from None


def _read_with_spacing(path: Path, reading: Reading) -> tuple[torch.Tensor, tuple | None]:
    from selfsup.data.datasets import read_picture

    return read_picture(path, reading), _dicom_spacing(path)


def read_manifest(path: Path, split: Split, reading: Reading) -> SegmentationSet:
    from selfsup.data.readers.dicom_seg import SegIndex
    from selfsup.data.readers.label_volumes import read_label_slice
    from selfsup.data.readers.manifest import ManifestDataset, read_table
    from selfsup.data.readers.volumes import is_volume

    columns, table = read_table(path)
    if "mask" not in columns:
        raise DataError(f"{path} has no mask column: give each row's mask file (a PNG label "
                        "map, or a NIfTI label volume for a volume's slice).")  # fmt: skip
    images = ManifestDataset(path, split, reading)
    by_row = {int(r["#row"]): r for r in table}
    classes = _folder_classes(path.parent)
    segs: dict[Path, SegIndex] = {}
    masks, spacing = [], []
    for i, (f, frame, row) in enumerate(zip(images.files, images.frames, images.rows)):
        r = by_row[int(row)]
        where = f"{path}, row {row}"
        if not r.get("mask"):
            raise DataError(f"{where}: no mask; give every row of a segmentation table its mask.")
        mask_file = Path(r["mask"]) if Path(r["mask"]).is_absolute() else path.parent / r["mask"]
        if not mask_file.is_file():
            raise DataError(f"{where}: mask {r['mask']} does not exist (paths are relative "
                            "to the table).")  # fmt: skip
        if is_volume(Path(f)):
            # on the image's grid (checked), so at the image slice's size
            mask, pixel = read_label_slice(mask_file, int(frame), reading, image=Path(f))
            size = mask.shape
        else:
            if mask_file not in segs:
                segs[mask_file] = SegIndex([mask_file])
            if segs[mask_file]:  # a DICOM SEG: the label map drawn on this image (frame)
                mask = segs[mask_file].mask_for(Path(f), None if frame is None else int(frame))
                if mask is None:
                    raise DataError(f"{where}: {mask_file.name} is a DICOM SEG that does not "
                                    f"reference {Path(f).name}; give the SEG drawn on it.")  # fmt: skip
                classes = classes or segs[mask_file].classes()
            else:
                mask = _read_label_map(mask_file)
            pixel = _dicom_spacing(Path(f))
            size = tuple(images[i][0].shape[1:])
        if r.get("spacing"):
            pixel = _spacing_cell(r["spacing"], where)
        n = len(classes) if classes else 2**16
        masks.append(check_mask(mask, size, n, f"{where}: {mask_file.name}"))
        spacing.append(pixel)
    if classes is None:
        k = max(int(m.max()) for m in masks) + 1
        classes = ["background", *[str(i) for i in range(1, max(k, 2))]]
    return SegmentationSet(_DatasetImages(images), masks, classes, images.groups, spacing,
                           [str(f) for f in images.files], source=str(path))  # fmt: skip


def _spacing_cell(text: str, where: str) -> tuple[float, float]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise DataError(f"{where}: spacing {text!r}; give the pixel size in mm as ROWSxCOLUMNS "
                        "(e.g. 0.7x0.7) or one number for square pixels.")  # fmt: skip
    return values[0], values[1]


def _dicom_spacing(path: Path) -> tuple[float, float] | None:
    from selfsup.data.readers.dicom import could_be_dicom, read_header

    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        return None
    if could_be_dicom(path):
        spacing = getattr(read_header(path), "PixelSpacing", None)
        if spacing is not None:
            return float(spacing[0]), float(spacing[1])
    return None


def read_shards(root: Path, split: Split) -> SegmentationSet:
    """A pack of images with masks (``selfsup data pack``): the masks and spacings held in
    memory (read once), the images read from the shards."""
    from selfsup.data.readers.shards import ShardDataset

    shards = ShardDataset(root, split)
    masks, spacing = [], []
    for i in range(len(shards)):
        sample = shards.sample(i)
        masks.append(np.asarray(sample["mask"]))
        s = np.asarray(sample["spacing"], dtype=float)
        spacing.append((float(s[0]), float(s[1])) if s[0] > 0 else None)
    data = SegmentationSet(_DatasetImages(shards), masks, shards.classes, shards.groups, spacing,
                           source=shards.source)  # fmt: skip
    data.content_id = shards.content_id
    return data
