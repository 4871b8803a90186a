"""Images with per-pixel masks, for the segmentation evaluator: an ``.npz`` with
``m_train``/``m_test``, or an image folder with a parallel mask folder.

A mask is an ``(H, W)`` map of class indices, 0 the background, at its image's size.
Where the masks come from:

- **npz**: ``x_<split>`` images and ``m_<split>`` masks ``(N, H, W)`` (integers), the class
  names in ``mask_classes`` (or ``classes`` when the file has no image labels), patients in
  ``groups_<split>``, the pixel size in mm in ``spacing_<split>`` ``(N, 2)`` or
  ``spacing`` ``(2,)`` (rows, columns);
- **folders**: ``DATA/<split>/images/...`` and ``DATA/<split>/masks/...``, a mask for each
  image at the same relative path with the same stem (a PNG label map, or any image file
  holding class indices), class names one per line in ``DATA/classes.txt``; DICOM images
  give their Pixel Spacing;
- **manifests** (:mod:`selfsup.data.readers.manifest`): a ``mask`` column beside ``path``:
  a PNG label map for an image or DICOM file, a NIfTI label volume for a volume's
  ``slice`` (cut through the same reorientation, plane and slice as the image; it must
  share the image's grid); an optional ``spacing`` column (``0.7x0.7``, mm, rows x
  columns), else DICOM Pixel Spacing or the volume's zooms; class names in
  ``classes.txt`` beside the table.

A mask whose size differs from its image's, or that holds a value no class names, is one
line naming the file and the fix (:class:`~selfsup.data.pixels.DataError`), found when the
set is opened (every mask is read then: masks are small, and a wrong one found after the
features would waste the extraction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.pixels import DataError, Intensity, Reading, Split
from selfsup.data.readers.masks import (
    ImagesOnly,
    SegmentationSet,
    check_mask,
    read_folders,
    read_manifest,
    read_npz,
    read_shards,
)

__all__ = ["ImagesOnly", "SegmentationSet", "check_mask", "has_masks", "open_segmentation"]


def has_masks(data: str | None, split: str) -> bool:
    """Whether ``data`` holds masks for ``split`` (an npz's ``m_<split>``, or a folder's
    ``<split>/masks/``)."""
    if not data:
        return False
    path = Path(data).expanduser()
    if path.is_file() and path.suffix == ".npz":
        try:
            return f"m_{split}" in np.load(path, allow_pickle=False).files
        except Exception:
            return False
    if path.is_dir() and _packed_masks(path):
        return True
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        from selfsup.data.readers.manifest import read_table

        try:
            return "mask" in read_table(path)[0]
        except DataError:
            return False
    return (path / split / "masks").is_dir()


def open_segmentation(
    data: str, split: Split, intensity: Intensity = "dtype", reading: Reading | None = None
) -> SegmentationSet:
    """The ``split`` of ``data`` (an ``.npz`` or a folder, see the module doc) with masks."""
    path = Path(data).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return read_npz(path, split, intensity)
    if path.is_dir() and _packed_masks(path):
        return read_shards(path, split)
    if (path / split / "masks").is_dir():
        return read_folders(path, split, reading or Reading(intensity=intensity))
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        return read_manifest(path, split, reading or Reading(intensity=intensity))
    raise DataError(
        f"{data} holds no masks: segmentation reads an .npz with m_train/m_test, a folder "
        f"with {split}/images/ and {split}/masks/ (same file stems), or a manifest with a "
        "mask column."
    )


def _packed_masks(path: Path) -> bool:
    """Shards ``selfsup data pack`` wrote from data with masks."""
    import json

    from selfsup.data.readers.shards import (
        META,
        default_cache,
        fetch_description,
        is_remote,
        is_shards,
    )

    if not is_shards(path):
        return False
    local = fetch_description(str(path), "train", default_cache()) if is_remote(path) else path
    return "mask_classes" in json.loads((local / META).read_text())
