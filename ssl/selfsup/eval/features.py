"""Frozen-backbone features for the evaluators: sharded over processes, cached on disk.

Each process embeds every ``world_size``-th image (no DistributedSampler padding,
so no image counts twice); the shards are gathered and put back in dataset order,
so 1 and N processes give the same feature matrix. The cache lives in
``$SELFSUP_CACHE`` (default ``~/.cache/selfsup/features``), never beside the data,
keyed by the checkpoint file (path, size, mtime), the weights and pooling used,
the data (path, size, mtime; for an image folder every file's), the split and the
eval transform.

An image file that cannot be read is left out of the evaluation (its features and
label), not replaced by a neighbour as pretraining does: a stand-in would count one
image twice. :class:`EvalNotes` carries what was left out, and any warning about
what the figures mean, to the result JSON; each warning is also one line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data.datasets import DataError, open_dataset
from selfsup.data.module import default_num_workers
from selfsup.distributed import gather_uneven, rank, world_size
from selfsup.errors import ConfigError


def cache_dir() -> Path:
    return Path(os.environ.get("SELFSUP_CACHE", Path.home() / ".cache" / "selfsup")) / "features"


def _file_id(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.is_file():
        stat = p.stat()
        return {"path": str(p.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    return {"name": path}  # a named data set (cifar10, patterns, ...)


def _data_id(data: str, dataset: Dataset | None) -> dict[str, Any]:
    """The data's identity: the file's (an .npz), or every image file's (a folder), so a
    replaced, mended or added image means new features; else the set's name."""
    content = getattr(dataset, "content_id", None)
    if content is not None:  # shards: their own index says what they hold
        return {"content": content}
    files = getattr(dataset, "files", None)
    if files is None:
        return _file_id(data)
    digest = hashlib.sha256()
    for f in files:
        stat = os.stat(f)
        digest.update(f"{os.path.abspath(f)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"files": digest.hexdigest()}


def cache_key(
    loaded: Any,
    data: str,
    split: str,
    transform: Any,
    dataset: Dataset | None = None,
    precision: str = "32",
) -> str:
    parts = {
        "precision": precision,
        "version": 2,  # entries carry which images were readable
        "checkpoint": _file_id(loaded.path),
        "weights": loaded.meta.get("loaded"),
        "pool": loaded.meta.get("pool"),
        "features": loaded.meta.get("features"),
        "backbone": loaded.meta.get("backbone"),
        "data": _data_id(data, dataset),
        "split": split,
        "reading": repr(getattr(dataset, "reading", None)),  # DICOM window, volume slicing
        "transform": [int(transform.size), list(loaded.meta.get("mean") or []),
                      list(loaded.meta.get("std") or [])],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class EvalNotes:
    """What an evaluation found that its figures alone do not show.

    ``warnings``: one line each, printed on stderr (rank 0) as ``selfsup: warning: ...``
    when found, and kept for the result JSON. ``skipped``: the unreadable image files
    left out (train, then test). ``train_index``: the dataset indices of the training
    images kept (``None``: all), for evaluators that read the images again.
    ``shared_groups``: how many groups (patients) the train and test splits share, when
    the user allowed it (``--allow_group_overlap``).
    """

    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    train_index: torch.Tensor | None = None
    shared_groups: int | None = None

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if rank() == 0:
            print(f"selfsup: warning: {message}", file=sys.stderr, flush=True)

    def copy(self) -> EvalNotes:
        return replace(self, warnings=list(self.warnings), skipped=list(self.skipped))

    def fields(self) -> dict[str, Any]:
        """The result JSON's fields: ``warnings``, ``skipped_images``, ``n_skipped`` (and
        ``group_overlap`` when the splits share groups)."""
        out: dict[str, Any] = {
            "warnings": list(self.warnings),
            "skipped_images": list(self.skipped),
            "n_skipped": len(self.skipped),
        }
        if self.shared_groups:
            out["group_overlap"] = {"shared_groups": self.shared_groups, "allowed": True}
        return out


class ClassNames(list):
    """A labelled set's class (or finding) names that carry the :class:`EvalNotes` of
    reading it and the group (patient) ids of the train and test images kept, so an
    evaluator given the names (``run_probe(..., class_names)``) reports and uses them too."""

    def __init__(
        self, names: Any, notes: EvalNotes | None = None, groups: tuple[Any, Any] = (None, None)
    ) -> None:
        super().__init__(names)
        self.notes = notes if notes is not None else EvalNotes()
        self.groups = groups


def groups_of(class_names: Any) -> tuple[Any, Any]:
    """The (train, test) group ids ``class_names`` carries, else ``(None, None)``."""
    return getattr(class_names, "groups", (None, None))


def notes_of(class_names: Any, notes: EvalNotes | None = None) -> EvalNotes:
    """A copy of ``notes``, else of the notes ``class_names`` carries, else empty notes."""
    found = notes if notes is not None else getattr(class_names, "notes", None)
    return found.copy() if found is not None else EvalNotes()


class EvalViews(Dataset):
    """``(transform(image), label, readable)``: ``readable`` is False where the dataset
    stood in the next readable image for an unreadable file (image folders)."""

    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        if hasattr(self.dataset, "read_item"):
            image, label, source = self.dataset.read_item(index)
        else:
            (image, label), source = self.dataset[index], index
        return self.transform(image), label, source == index


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, D)`` and labels ``(N,)`` of a labelled dataset of eval views, in
    dataset order, on every process (each process embeds its shard)."""
    feats, labels, _ = _extract(backbone, dataset, batch_size, num_workers, device)
    return feats, labels


@torch.no_grad()
def _extract(
    backbone: torch.nn.Module,
    dataset: Dataset,
    batch_size: int,
    num_workers: int | None,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`extract_features` and a bool ``(N,)``: which items were readable (all, for a
    dataset of ``(view, label)`` pairs; :class:`EvalViews` says it per item)."""
    workers = default_num_workers() if num_workers is None else num_workers
    indices = torch.arange(rank(), len(dataset), world_size())
    shard = Subset(dataset, indices.tolist())
    feats, labels, readable = [], [], []
    backbone = backbone.to(device)
    for x, y, *flag in DataLoader(shard, batch_size=batch_size, num_workers=workers):
        feats.append(backbone(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
        readable.append(torch.as_tensor(flag[0]) if flag else torch.ones(len(x), dtype=torch.bool))
    dim = getattr(backbone, "embed_dim", 0)
    local_f = torch.cat(feats) if feats else torch.zeros(0, dim)
    local_y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    local_ok = torch.cat(readable).long() if readable else torch.zeros(0, dtype=torch.long)
    # Back in dataset order, whatever the number of processes.
    order = gather_uneven(indices.to(device)).cpu()
    all_f = gather_uneven(local_f.to(device)).cpu()
    all_y = gather_uneven(local_y.to(device)).cpu()
    all_ok = gather_uneven(local_ok.to(device)).cpu().bool()
    inverse = torch.argsort(order)
    return all_f[inverse], all_y[inverse], all_ok[inverse]


def split_features(
    loaded: Any,
    data: str,
    split: str,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Features and labels of every item of ``dataset`` (dataset order) through the
    on-disk cache, which items were readable (bool ``(N,)``), and whether the cache hit.
    The forward passes run in bf16 autocast where the hardware runs bf16 natively
    (``loaded.meta["eval_precision"]``: ``auto``, or ``32`` for fp32; see
    :func:`selfsup.precision.eval_precision`)."""
    from selfsup.precision import eval_autocast, eval_precision

    transform = loaded.eval_transform()
    asked = loaded.meta.get("eval_precision", "auto")
    key = cache_key(loaded, data, split, transform, dataset, eval_precision(device, asked))
    path = cache_dir() / f"{key}.pt"
    if use_cache and path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        return cached["features"], cached["labels"], cached["readable"], True
    with eval_autocast(device, asked):
        feats, labels, readable = _extract(
            loaded.backbone, EvalViews(dataset, transform), batch_size, num_workers, device
        )
    if use_cache and rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": feats, "labels": labels, "readable": readable}, tmp)
        os.replace(tmp, path)  # never a half-written cache file
    return feats, labels, readable, False


def cached_features(
    loaded: Any,
    data: str,
    split: str,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`split_features` of the readable images only; the flag says whether the
    cache hit."""
    feats, labels, readable, hit = split_features(
        loaded, data, split, dataset, batch_size, num_workers, use_cache, device
    )
    return feats[readable], labels[readable], hit


def _listing(files: list[str], shown: int = 3) -> str:
    more = (
        f", ... ({len(files)} in all: skipped_images in the result)" if len(files) > shown else ""
    )
    return ", ".join(files[:shown]) + more


def labelled_features(
    loaded: Any,
    data: str,
    task: str,
    batch_size: int = 256,
    num_workers: int | None = None,
    root: str | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
    reading: Any = None,
    allow_group_overlap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, ClassNames]:
    """Train and test features and labels (int ``(N,)``, or 0/1 ``(N, K)`` for multi-label
    sets) of a labelled data set, and its class names (:class:`ClassNames`, whose ``notes``
    list the unreadable images left out and whose ``groups`` are the images' patients);
    ``reading`` says how DICOM files and volumes become pixels.

    Train and test splits that share a group (patient) stop here, before any feature is
    extracted, unless ``allow_group_overlap`` (then a warning, and the count in the JSON)."""
    train = open_dataset(data, "train", root, reading=reading)
    test = open_dataset(data, "test", root, reading=reading)
    if train.targets is None or test.targets is None:
        raise ConfigError(f"{data} has no labels: {task} needs labelled train and test splits.")
    notes, out = EvalNotes(), []
    notes.shared_groups = check_group_overlap(train, test, data, allow_group_overlap, notes)
    groups = []
    for split, dataset in (("train", train), ("test", test)):
        feats, labels, readable, _ = split_features(
            loaded, data, split, dataset, batch_size, num_workers, use_cache, device
        )
        if not readable.any():
            raise DataError(
                f"None of the {len(dataset)} {split} images of {data} can be read: "
                "replace them with readable images."
            )
        if not readable.all():
            files = getattr(dataset, "files", None)
            lost = (~readable).nonzero().flatten().tolist()
            names = [str(files[i]) if files is not None else f"{split}[{i}]" for i in lost]
            notes.skipped += names
            notes.warn(
                f"{len(lost)} of {len(dataset)} {split} images cannot be read and are left out "
                f"of {task}: {_listing(names)}"
            )
            if split == "train":
                notes.train_index = readable.nonzero().flatten()
        if len(labels) and int(labels.min()) < 0:
            raise DataError(
                f"{data}: the {split} split has label {int(labels.min())}; {task} needs a class "
                "index 0..K-1 (or a class name) for every image."
            )
        out += [feats[readable], labels[readable]]
        ids = getattr(dataset, "groups", None)
        groups.append(None if ids is None else np.asarray(ids).astype(str)[readable.numpy()])
    train_f, train_y, test_f, test_y = out
    return train_f, train_y, test_f, test_y, ClassNames(train.classes, notes, tuple(groups))


def check_group_overlap(
    train: Dataset, test: Dataset, data: str, allowed: bool, notes: EvalNotes
) -> int:
    """The number of groups both splits hold; a :class:`ConfigError` naming a few of them
    when there are any and ``allowed`` is False."""
    from selfsup.eval.splits import shared_groups

    shared = shared_groups(getattr(train, "groups", None), getattr(test, "groups", None))
    if not shared:
        return 0
    few = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
    message = (
        f"{data}: {len(shared)} group(s) (patients) have images in both the train and the test "
        f"split ({few})"
    )
    if not allowed:
        raise ConfigError(
            f"{message}: their images would be evaluated against themselves. Put each patient "
            "in one split, or pass --allow_group_overlap to evaluate anyway."
        )
    notes.warn(f"{message}; evaluated anyway (--allow_group_overlap).")
    return len(shared)
