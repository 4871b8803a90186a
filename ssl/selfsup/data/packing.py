"""``selfsup data pack``: any source selfsup reads, written once as litdata shards.

Every split the source has (train, val, test) is read through the same readers and
reading options as a run would read it (window, frames, slices, intensity), so the shards
hold the pixels a run sees, decoded once: a DICOM tree of a few hundred thousand files
becomes a few hundred chunk files that stream from a local disk or an object store.

Each sample holds ``image`` (``(H, W, C)`` uint8, or uint16 for deeper data: the reader's
[0, 1] floats at 16 bits), ``label`` (a class index, -1 unlabelled, or the 0/1 findings),
``group``, ``source`` (the file it came from), and, for data with masks, ``mask`` and
``spacing`` (mm; -1 unknown). ``max_side`` caps the longest side (images by area
averaging, masks by nearest neighbour, the spacing scaled with them).

Unreadable files are left out and listed. A split is written to ``<split>.partial`` and
renamed when complete, so an interrupted pack writes that split again on the next run and
a finished split is never written twice. ``selfsup.json`` beside the splits
says what was packed: the source, the reading options, the classes, and per split the
samples and the files skipped; each split's ``selfsup_index.npz`` holds the labels,
groups and sources in sample order (what evaluators and group-aware splits need without
reading the pixels).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.pixels import DataError
from selfsup.data.readers.shards import INDEX, META, SHARDS_FORMAT


class _Sampler:
    """The picklable function litdata's workers call with an index: one sample, or none
    for an unreadable file."""

    def __init__(self, dataset: Any, segmentation: bool, max_side: int | None) -> None:
        self.dataset, self.segmentation, self.max_side = dataset, segmentation, max_side

    def __call__(self, index: int):
        ds = self.dataset
        if self.segmentation:
            image, mask = ds[index]
            label, source = -1, index
        elif hasattr(ds, "read_item"):
            image, label, source = ds.read_item(index)
            mask = None
        else:
            (image, label), source, mask = ds[index], index, None
        if source != index:  # the reader stood in the next readable file: leave it out
            return
        spacing = None
        if self.segmentation:
            s = ds.spacing[index]
            spacing = np.asarray(s if s is not None else (-1.0, -1.0), np.float64)
        image, mask, spacing = _cap(image, mask, spacing, self.max_side)
        files = getattr(ds, "files", None)
        groups = getattr(ds, "groups", None)
        sample = {
            "image": _stored(image),
            "label": np.asarray(label, np.int64) if torch.is_tensor(label) else int(label),
            "group": "" if groups is None else str(groups[index]),
            "source": str(files[index]) if files is not None else f"#{index}",
        }
        if self.segmentation:
            sample.update(mask=mask.numpy().astype(np.uint8), spacing=spacing)
        yield sample


def _stored(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` uint8, or float in [0, 1] -> ``(H, W, C)`` uint8 / uint16."""
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 65535).round().to(torch.int32)
        return image.permute(1, 2, 0).numpy().astype(np.uint16)
    return image.permute(1, 2, 0).contiguous().numpy()


def _cap(image: torch.Tensor, mask: torch.Tensor | None, spacing: np.ndarray | None,
         max_side: int | None) -> tuple:  # fmt: skip
    h, w = image.shape[-2:]
    if max_side is None or max(h, w) <= max_side:
        return image, mask, spacing
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    dtype = image.dtype
    x = F.interpolate(image[None].float(), size=size, mode="area")[0]
    image = x.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else x.to(dtype)
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    if spacing is not None and spacing[0] > 0:
        spacing = spacing * np.array([h / size[0], w / size[1]])
    return image, mask, spacing


def pack(data: Any, out: str | Path, max_side: int | None = None, workers: int = 1,
         chunk_bytes: str = "64MB") -> dict[str, Any]:  # fmt: skip
    """Pack every split of ``data`` (a :class:`~selfsup.data.module.PretrainDataModule`)
    into ``out``; returns what ``selfsup.json`` says."""
    import litdata

    from selfsup.data.segmentation import has_masks, open_segmentation

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(format=SHARDS_FORMAT, source=str(data.path), max_side=max_side,
                reading={k: v for k, v in vars(data.reading).items()})  # fmt: skip
    meta.setdefault("splits", {})
    for split in ("train", "val", "test"):
        segmentation = has_masks(data.path, split)
        try:
            ds = (open_segmentation(data.path, split, data.intensity, data.reading)
                  if segmentation else data.open(split))  # fmt: skip
        except DataError:
            continue  # the source has no such split
        done = out / split
        if (done / INDEX).is_file():
            continue  # packed by an earlier run
        partial = out / f"{split}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # an interrupted pack: this split again
        litdata.optimize(fn=_Sampler(ds, segmentation, max_side), inputs=list(range(len(ds))),
                         output_dir=str(partial), chunk_bytes=chunk_bytes, num_workers=workers,
                         keep_data_ordered=True, verbose=False)  # fmt: skip
        index = _write_index(partial, ds, segmentation)
        shutil.rmtree(done, ignore_errors=True)
        partial.rename(done)
        skipped = sorted(set(map(str, getattr(ds, "files", None) or [])) - set(index["sources"]))
        meta["splits"][split] = {"samples": len(index["sources"]), "skipped": skipped}
        if segmentation:
            meta["mask_classes"] = list(ds.classes)
        elif getattr(ds, "classes", None) is not None:
            meta["classes"] = list(ds.classes)
            meta["multilabel"] = bool(getattr(ds, "multilabel", False))
        meta_path.write_text(json.dumps(meta, indent=1))
    if not meta["splits"]:
        raise DataError(f"{data.path}: no split could be read to pack.")
    return meta


def _write_index(directory: Path, dataset: Any, segmentation: bool) -> dict[str, np.ndarray]:
    """Labels, groups and sources of the packed samples, in order, from the shards."""
    import litdata

    packed = litdata.StreamingDataset(str(directory))
    labels, groups, sources = [], [], []
    for i in range(len(packed)):
        sample = packed[i]
        labels.append(np.asarray(sample["label"]))
        groups.append(sample["group"])
        sources.append(sample["source"])
    index = {"labels": np.stack(labels) if labels else np.zeros(0, np.int64),
             "groups": np.asarray(groups, dtype=str), "sources": np.asarray(sources, dtype=str)}  # fmt: skip
    np.savez(directory / INDEX, **index)
    return index
