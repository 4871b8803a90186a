"""Shards written by ``selfsup data pack`` (litdata's streaming format), read as any other
data set: ``(image, label)`` in sample order, with the classes, labels and groups of the
pack's index (:mod:`selfsup.data.packing`).

litdata's :class:`~litdata.StreamingDataset` is used map-style: the samplers selfsup
already uses (its seeded per-epoch order, DistributedSampler's shards, mid-epoch resume)
decide which samples each process reads, so a run over shards sees every sample once per
epoch and resumes exactly as over files. The chunks a process reads are cached on local
disk by litdata, bounded by ``max_cache_size``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.labels import Labelled
from selfsup.data.pixels import DataError, to_tensor_image

#: What ``selfsup data pack`` writes: its format name, the pack's description beside the
#: splits, and each split's index of labels, groups and sources.
SHARDS_FORMAT = "selfsup-shards-1"
META = "selfsup.json"
INDEX = "selfsup_index.npz"


def is_shards(path: Path) -> bool:
    """Whether ``path`` is a folder ``selfsup data pack`` wrote."""
    meta = path / META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == SHARDS_FORMAT
    except (OSError, ValueError):
        return False


class ShardDataset(Labelled, Dataset):
    """One split of a pack: ``(image (C, H, W), label)``; ``sample(i)`` gives the whole
    stored sample (mask, spacing, source)."""

    def __init__(self, root: Path, split: str, max_cache_size: str = "50GB") -> None:
        meta = json.loads((root / META).read_text())
        directory = root / split
        if not (directory / INDEX).is_file():
            packed = ", ".join(meta.get("splits", {})) or "none"
            raise DataError(f"{root} holds no packed {split} split (packed: {packed}); pack "
                            "the source again with that split, or use another split.")  # fmt: skip
        index = np.load(directory / INDEX)
        self.root, self.split, self.directory = root, split, directory
        self.source = f"{root} ({split}, shards of {meta.get('source')})"
        self.classes = list(meta.get("classes") or meta.get("mask_classes") or [])
        labels = index["labels"]
        self.labels = None if labels.ndim == 1 and (labels < 0).all() else labels
        groups = index["groups"]
        self.groups = groups if (groups != "").any() else None
        self.files = None  # the sources need not exist where the shards are read
        self.sources = index["sources"]
        index_file = (directory / "index.json").read_bytes()
        #: what the feature cache keys on: the pack's own index (a new pack, new features)
        self.content_id = hashlib.sha256(index_file + (directory / INDEX).read_bytes()).hexdigest()
        self.max_cache_size = max_cache_size
        self._stream = None

    def _open(self):
        if self._stream is None:  # opened lazily: each DataLoader worker opens its own
            import litdata

            self._stream = litdata.StreamingDataset(str(self.directory),
                                                   max_cache_size=self.max_cache_size)  # fmt: skip
        return self._stream

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def targets(self) -> np.ndarray | None:
        return self.labels

    def sample(self, index: int) -> dict:
        return self._open()[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        return to_tensor_image(self.sample(index)["image"]), self.label_at(index)
