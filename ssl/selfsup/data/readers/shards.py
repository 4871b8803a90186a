"""Shards written by ``selfsup data pack`` (litdata's streaming format), read as any other
data set: ``(image, label)`` in sample order, with the classes, labels and groups of the
pack's index (:mod:`selfsup.data.packing`).

litdata's :class:`~litdata.StreamingDataset` is used map-style: the samplers selfsup
already uses (its seeded per-epoch order, DistributedSampler's shards, mid-epoch resume)
decide which samples each process reads, so a run over shards sees every sample once per
epoch and resumes exactly as over files.

A pack may live in an object store (``s3://bucket/pack``, ``gs://``, ``azure://``, ``hf://``;
credentials and endpoints as the store's own tools read them, e.g. ``AWS_ENDPOINT_URL``):
its description and indexes are fetched once into a local cache folder, and litdata
streams the chunks a process reads into it, deleting the oldest ones beyond
``max_cache_size`` (``--data.shard_cache_size``).
"""

from __future__ import annotations

import hashlib
import json
import os
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


#: Object-store URLs litdata streams from.
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "hf://")


def is_remote(data: str | Path) -> bool:
    return str(data).startswith(REMOTE_PREFIXES)


def default_cache() -> Path:
    return Path(
        os.environ.get("SELFSUP_SHARD_CACHE", Path.home() / ".cache" / "selfsup" / "shards")
    )


def fetch_description(url: str, split: str, cache: Path) -> Path:
    """The local copy of a remote pack's description and ``split``'s indexes (fetched once
    per pack and split, with litdata's downloader for the URL's store)."""
    from litdata.streaming.downloader import get_downloader

    local = cache / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    downloader = get_downloader(url, str(local), [])
    for name in (META, f"{split}/{INDEX}", f"{split}/index.json"):
        target = local / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            error = "not found"
            try:  # litdata's downloaders pass over a missing object in silence
                downloader.download_file(f"{url.rstrip('/')}/{name}", str(target))
            except Exception as e:  # the store's own error, in one line
                error = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            if not target.is_file():
                if name == META:
                    raise DataError(f"Cannot read {url}/{META} ({error}): give a pack `selfsup data "
                                    "pack` wrote, and the store's credentials.")  # fmt: skip
                break  # that split was not packed: ShardDataset says so
    return local


def is_shards(path: Path) -> bool:
    """Whether ``path`` is a folder ``selfsup data pack`` wrote."""
    if is_remote(path):
        return True
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

    def __init__(self, root: Path | str, split: str, max_cache_size: str = "50GB",
                 cache: Path | None = None) -> None:  # fmt: skip
        self.url = str(root).rstrip("/") if is_remote(root) else None
        cache = Path(cache) if cache else default_cache()
        local = fetch_description(self.url, split, cache) if self.url else Path(root)
        meta = json.loads((local / META).read_text())
        directory = local / split
        if not (directory / INDEX).is_file():
            packed = ", ".join(meta.get("splits", {})) or "none"
            raise DataError(f"{root} holds no packed {split} split (packed: {packed}); pack "
                            "the source again with that split, or use another split.")  # fmt: skip
        index = np.load(directory / INDEX)
        self.root, self.split, self.directory = local, split, directory
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

            if self.url is None:
                self._stream = litdata.StreamingDataset(
                    str(self.directory), max_cache_size=self.max_cache_size
                )
            else:  # chunks stream into the cache folder beside the fetched indexes
                self._stream = litdata.StreamingDataset(f"{self.url}/{self.split}", cache_dir=str(self.directory),
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
