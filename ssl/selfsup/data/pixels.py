"""Pixels: image files and arrays to ``(C, H, W)`` tensors, with the intensity and channel policies.

Images are ``uint8`` for 8-bit data and ``float32`` in ``[0, 1]`` for deeper data. 16-bit
intensity policy: ``intensity="dtype"`` (default) maps the dtype's full range to
``[0, 1]`` (0..65535); ``intensity="percentile"`` maps each image's ``[p_low, p_high]``
percentile window to ``[0, 1]`` and clips, which suits CT/X-ray data that uses a small
part of the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from selfsup.errors import ConfigError

Split = Literal["train", "test"]
Intensity = Literal["dtype", "percentile"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NAMED_DATASETS = ("patterns", "cifar10", "cifar100", "stl10", "medmnist:<flag>")


class DataError(ConfigError):
    """The data the user pointed at cannot be used; the message names the fix."""


#: CT windows (centre, width) in Hounsfield units, as radiology reads them.
WINDOW_PRESETS = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (40.0, 400.0),
}


@dataclass(frozen=True)
class Reading:
    """How files become samples: the intensity policy for every deep image, what DICOM
    files and volumes (NIfTI) need besides, and which manifest columns are the labels.

    Args:
        intensity: images deeper than 8 bits without a window of their own: ``dtype``
            maps the stored range to [0, 1], ``percentile`` each image's (each volume's)
            0.5-99.5 percentile window.
        window: DICOM and volumes: ``None`` for the DICOM file's own VOI LUT or window
            (else the intensity policy); ``percentile``; a CT preset (``lung``,
            ``mediastinum``, ``bone``, ``brain``, ``abdomen``); or ``center,width`` in the
            modality's units (Hounsfield units for CT).
        frames: multi-frame DICOM: ``all`` (each frame is an image) or ``middle``.
        slice_axis: volumes: the axis slices are cut along after reorientation to the
            closest canonical (RAS) orientation: ``axial``, ``coronal`` or ``sagittal``.
        slice_context: volumes: 0 reads one slice; k reads 2k + 1 adjacent slices as
            channels (1: the 2.5D input of three slices).
        slices_per_volume: volumes: slices drawn per volume and epoch (an epoch is
            this many random slices of every volume).
        foreground_threshold: volumes: a drawn slice with less than this share of its
            pixels above the volume's lowest intensity is drawn again (background only).
        volumes_4d: 4D volumes: ``all`` (each 3D volume counts as one) or ``first``.
        square_pixels: volumes: resample each slice to square pixels (in-plane spacing).
        volume_cache: volumes: decoded volumes kept in memory per process (or worker).
        label_columns: manifests: the columns that are the labels, one 0/1 finding each
            (multi-label; ``1``/``0``, ``1.0``/``0.0``, ``true``/``false``); None reads
            the table's ``label`` or ``labels`` column.
        shard_cache: shards in an object store: the local folder their indexes and the
            chunks being read are cached in (default ``~/.cache/selfsup/shards``, or
            ``SELFSUP_SHARD_CACHE``).
        shard_cache_size: shards: the most disk their cached chunks take (litdata deletes
            the oldest beyond it), e.g. ``50GB``.
    """

    intensity: Intensity = "dtype"
    window: str | None = None
    frames: Literal["all", "middle"] = "all"
    slice_axis: Literal["axial", "coronal", "sagittal"] = "axial"
    slice_context: int = 0
    slices_per_volume: int = 8
    foreground_threshold: float = 0.05
    volumes_4d: Literal["all", "first"] = "all"
    square_pixels: bool = False
    volume_cache: int = 4
    label_columns: tuple[str, ...] | None = None
    shard_cache: str | None = None
    shard_cache_size: str = "50GB"

    def __post_init__(self) -> None:
        # Checked here, before any file is read: a bad value found while reading would
        # look like an unreadable file.
        self.window_values()
        for name, least in (("slice_context", 0), ("slices_per_volume", 1), ("volume_cache", 0)):
            if getattr(self, name) < least:
                raise DataError(f"data.{name} is {getattr(self, name)}: give {least} or more.")
        if not 0.0 <= self.foreground_threshold < 1.0:
            raise DataError(
                f"data.foreground_threshold is {self.foreground_threshold}: give a share in [0, 1)."
            )
        object.__setattr__(self, "label_columns", _column_names(self.label_columns))

    def window_values(self) -> tuple[float, float] | str | None:
        """``(center, width)``, ``"percentile"``, or None (the file's own window)."""
        w = self.window
        if w is None or w in ("", "file", "auto"):
            return None
        if w == "percentile":
            return "percentile"
        if w in WINDOW_PRESETS:
            return WINDOW_PRESETS[w]
        try:
            center, width = (float(v) for v in w.split(","))
        except ValueError:
            raise DataError(
                f"data.window {w!r}: give center,width (e.g. -600,1500), percentile, or one of "
                f"{', '.join(WINDOW_PRESETS)}."
            ) from None
        if width <= 0:
            raise DataError(f"data.window {w!r}: the width must be positive.")
        return center, width


def _column_names(names: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``label_columns`` as a tuple of stripped names (a lone name is one column; none: None)."""
    if names is None:
        return None
    names = (names,) if isinstance(names, str) else tuple(names)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"label_columns {list(names)}: give non-empty column names.")
    names = tuple(n.strip() for n in names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"label_columns names {', '.join(twice)} twice: give each column once.")
    return names or None


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


#: What reading a broken file raises: PIL's UnidentifiedImageError (not an image,
#: zero bytes) and "image file is truncated" are OSErrors; damaged headers raise the others.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
