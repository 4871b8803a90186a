"""The training loader's draws are functions of (seed, epoch, index): the same batches,
views and collate-drawn masks with or without worker processes, and a loader resuming
inside an epoch yields that epoch's remaining batches without loading the skipped ones."""

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from conftest import make_blob_images
from selfsup.data.streams import EpochSeededLoader, SeededTransforms
from selfsup.masks import MultiBlockMaskCollator, MultiBlockMaskSampler
from selfsup.transforms import IJEPATransform, SimCLRTransform


class Images(Dataset):
    """96 tiny images; remembers which indices were read (in this process)."""

    def __init__(self) -> None:
        x, y = make_blob_images(96, 32, seed=0)
        self.items = [
            (torch.from_numpy(i).permute(2, 0, 1).contiguous(), int(t)) for i, t in zip(x, y)
        ]
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        self.read.append(index)
        return self.items[index]


def tensors(batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    return [t for part in batch for t in tensors(part)]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        all(torch.equal(x, y) for x, y in zip(tensors(p), tensors(q), strict=True))
        for p, q in zip(a, b)
    )


def batches(images: Images, transform, workers: int, skip: int = 0, collate=None, **kw) -> list:
    loader = EpochSeededLoader(SeededTransforms(images, transform), batch_size=16,
                               drop_last=True, num_workers=workers, collate_fn=collate,
                               epoch_fn=lambda: (3, 0, skip), **kw)  # fmt: skip
    if "sampler" not in kw:
        assert len(loader) == 6  # a resumed epoch still counts all its batches
    return list(loader)


@pytest.fixture(autouse=True)
def _seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")


def test_views_do_not_depend_on_workers_and_a_resumed_epoch_skips_without_loading():
    images, transform = Images(), SimCLRTransform(size=32)
    whole = batches(images, transform, workers=0, shuffle=True)
    assert same(whole, batches(images, transform, workers=2, shuffle=True))
    images.read.clear()
    tail = batches(images, transform, workers=0, skip=4, shuffle=True)
    assert same(whole[4:], tail)
    assert len(images.read) == 2 * 16  # the two remaining batches' images only
    assert same(whole[4:], batches(images, transform, workers=2, skip=4, shuffle=True))


def test_collate_masks_do_not_depend_on_workers_or_on_skipped_batches():
    collate = MultiBlockMaskCollator(MultiBlockMaskSampler(16, n_targets=4))
    images, transform = Images(), IJEPATransform(size=32)
    whole = batches(images, transform, workers=0, collate=collate, shuffle=True)
    assert same(
        whole[3:], batches(images, transform, workers=2, skip=3, collate=collate, shuffle=True)
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_resumes_its_own_shard(rank):
    images, transform = Images(), SimCLRTransform(size=32)

    def shard(skip: int, workers: int) -> list:
        sampler = DistributedSampler(images, num_replicas=2, rank=rank, shuffle=True, seed=7)
        return batches(images, transform, workers, skip, sampler=sampler)

    whole = shard(0, 0)
    assert len(whole) == 3  # 48 of the 96 images on each rank
    images.read.clear()
    tail = shard(2, 0)
    assert same(whole[2:], tail) and len(images.read) == 16
    assert same(whole[2:], shard(2, 2))
