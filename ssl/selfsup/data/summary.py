"""What selfsup will read from a data set: counts, shapes, value ranges, labels (images
per class, or positives per finding for multi-label data), groups, and what it skips and
why — printed before a run starts and by ``selfsup data inspect``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def base_dataset(ds: Dataset) -> Dataset:
    """The reader under any wrappers (channel conversion, transforms)."""
    while hasattr(ds, "dataset"):
        ds = ds.dataset
    return ds


def describe(ds: Dataset, samples: int = 16) -> dict[str, Any]:
    """A dict of what ``ds`` holds; ``samples`` evenly spaced images are read for their
    shapes, dtype and value range (as the model will see them: after the window).

    The counts and the lists of skipped files say the same: both are what is known once
    the samples are read (a file whose header reads but whose pixels do not is found
    only when read; ``scan()``, which ``--data.strict`` runs, reads every file)."""
    base = base_dataset(ds)
    info: dict[str, Any] = {"source": getattr(base, "source", ""), "reader": type(base).__name__,
                            "items": len(ds)}  # fmt: skip
    picks = np.unique(np.linspace(0, len(ds) - 1, min(samples, len(ds))).round().astype(int))
    images = [torch.as_tensor(ds[int(i)][0]) for i in picks]
    if hasattr(base, "summary"):  # after the reads, which may find more files unreadable
        info.update(base.summary())
    info["sample_shapes"] = dict(Counter("x".join(map(str, im.shape)) for im in images))
    info["sample_dtype"] = str(images[0].dtype).replace("torch.", "")
    scale = 255.0 if images[0].dtype == torch.uint8 else 1.0
    info["sample_range"] = [min(float(im.min()) for im in images) / scale,
                            max(float(im.max()) for im in images) / scale]  # fmt: skip
    info["channels"] = int(images[0].shape[0])
    labels = getattr(base, "targets", None)
    classes = list(getattr(base, "classes", []) or [])
    if labels is not None and len(labels) and np.ndim(labels) == 2:
        positives = np.asarray(labels).sum(axis=0)
        info["findings"] = {(classes[k] if k < len(classes) else str(k)):
                            {"positives": int(n), "share": round(float(n) / len(labels), 4)}
                            for k, n in enumerate(positives)}  # fmt: skip
    elif labels is not None and len(labels):
        counts = Counter(int(y) for y in np.asarray(labels).reshape(-1))
        info["labels"] = {(classes[k] if k < len(classes) else str(k)): n
                          for k, n in sorted(counts.items())}  # fmt: skip
    groups = getattr(base, "groups", None)
    if groups is not None:
        info["groups"] = len(set(np.asarray(groups).tolist()))
    skipped = base.skipped() if hasattr(base, "skipped") else []
    info["skipped_unreadable"] = skipped
    info["skipped_not_images"] = list(getattr(base, "not_images", []))
    return info


def one_line(info: dict[str, Any]) -> str:
    """The summary a run prints before training."""
    parts = [f"{info.get('images', info['items'])} images" if info["reader"] != "VolumeSliceDataset"
             else f"{info.get('volumes_3d', '?')} volumes x {info.get('slices_per_volume')} "
                  f"slices per epoch"]  # fmt: skip
    if info.get("dicom_files"):
        parts.append(f"{info['dicom_files']} DICOM files ({info['dicom_frames']} frames)")
    parts.append(f"{info['channels']} channel(s), {'/'.join(info['sample_shapes'])} px")
    if "labels" in info:
        parts.append(f"{len(info['labels'])} classes")
    if "findings" in info:
        parts.append(f"{len(info['findings'])} findings (multi-label)")
    if "groups" in info:
        parts.append(f"{info['groups']} groups")
    skipped = len(info["skipped_unreadable"]), len(info["skipped_not_images"])
    parts.append(f"skipped: {skipped[0]} unreadable, {skipped[1]} not images")
    return f"{info['source']}: " + ", ".join(parts)
