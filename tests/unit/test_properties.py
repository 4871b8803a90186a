"""Property tests (hypothesis): the npz and image-folder loaders return exactly the pixels
and labels they were given; every mask generator keeps its invariants."""

import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from selfsup.data.datasets import load_npz, open_dataset
from selfsup.masks import MultiBlockMaskSampler, random_masking

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def image_sets(draw, dtype=np.uint8):
    n = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shape = draw(st.sampled_from([(n, h, w), (n, h, w, 1), (n, h, w, 3)]))
    images = draw(arrays(dtype, shape))
    labels = draw(arrays(np.int64, (n,), elements=st.integers(0, 4)))
    return images, labels


@FAST
@given(train=image_sets(), test=image_sets())
def test_npz_loader_returns_the_arrays_pixels_and_labels(train, test):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        np.savez(path, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
        for (images, labels), split in ((train, "train"), (test, "test")):
            ds = load_npz(path, split)
            assert len(ds) == len(images)
            for i in range(len(images)):
                x, y = ds[i]
                expected = images[i] if images.ndim == 4 else images[i][..., None]
                assert x.dtype == torch.uint8 and y == labels[i]
                assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1))


@FAST
@given(images=image_sets(dtype=np.uint16))
def test_npz_16_bit_images_map_the_dtype_range_to_0_1_without_clipping(images):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        np.savez(path, x_train=images[0], y_train=images[1])
        ds = load_npz(path, "train")
        for i in range(len(ds)):
            x, _ = ds[i]
            raw = images[0][i] if images[0].ndim == 4 else images[0][i][..., None]
            expected = torch.from_numpy(raw.astype(np.float32) / 65535).permute(2, 0, 1)
            assert torch.allclose(x, expected) and x.min() >= 0 and x.max() <= 1


@FAST
@given(
    pixels=st.lists(
        arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3))),
        min_size=1,
        max_size=4,
    ),
    gray16=arrays(np.uint16, (5, 7)),
)
def test_image_folder_loader_returns_the_files_pixels_and_labels(pixels, gray16):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split in ("train", "test"):
            for i, p in enumerate(pixels):
                folder = root / split / f"c{i % 2}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(p).save(folder / f"{i}.png")
        ds = open_dataset(str(root), "train")
        by_name = {Path(f).stem: k for k, f in enumerate(ds.files)}
        for i, p in enumerate(pixels):
            x, y = ds[by_name[str(i)]]
            assert y == ds.classes.index(f"c{i % 2}")
            assert torch.equal(x, torch.from_numpy(p).permute(2, 0, 1))
        # A 16-bit gray file: its own folder, the dtype range mapped to [0, 1].
        gray_root = root / "gray"
        gray_root.mkdir()
        Image.fromarray(gray16).save(gray_root / "g.png")
        x, y = open_dataset(str(gray_root), "train")[0]
        assert y == -1 and x.shape == (1, 5, 7)
        assert torch.allclose(x[0], torch.from_numpy(gray16.astype(np.float32) / 65535))


@FAST
@given(
    batch=st.integers(1, 5),
    n=st.integers(1, 64),
    ratio=st.floats(0.0, 0.99),
    seed=st.integers(0, 99),
)
def test_random_masking_keeps_the_reference_count_of_distinct_patches(batch, n, ratio, seed):
    keep, restore = random_masking(batch, n, ratio, generator=torch.Generator().manual_seed(seed))
    assert keep.shape == (batch, int(n * (1 - ratio)))
    for row_keep, row_restore in zip(keep, restore, strict=True):
        assert len(set(row_keep.tolist())) == keep.shape[1] and all(
            0 <= i < n for i in row_keep.tolist()
        )
        assert sorted(row_restore.tolist()) == list(range(n))  # a permutation


@FAST
@given(
    h=st.integers(4, 14), w=st.integers(4, 14), n_targets=st.integers(1, 4),
    t_lo=st.floats(0.02, 0.15), t_span=st.floats(0.0, 0.1), c_lo=st.floats(0.6, 1.0),
    batch=st.integers(1, 4), seed=st.integers(0, 999),
)  # fmt: skip
def test_multi_block_masks_are_disjoint_blocks_within_the_grid(
    h, w, n_targets, t_lo, t_span, c_lo, batch, seed
):
    sampler = MultiBlockMaskSampler((h, w), n_targets, (t_lo, t_lo + t_span), (0.75, 1.5),
                                    (c_lo, 1.0), (1.0, 1.0), min_keep=1, max_tries=200)  # fmt: skip
    context, targets = sampler.sample(batch, torch.Generator().manual_seed(seed))
    assert context.shape[0] == batch and targets.shape[:2] == (batch, n_targets)
    assert context.shape[1] >= 1 and targets.shape[2] >= 1
    for b in range(batch):
        ctx = set(context[b].tolist())
        assert len(ctx) == context.shape[1] and all(0 <= i < h * w for i in ctx)
        assert context[b].tolist() == sorted(ctx)
        for t in targets[b]:
            block = t.tolist()
            assert ctx.isdisjoint(block) and all(0 <= i < h * w for i in block)
            rows, cols = {i // w for i in block}, {i % w for i in block}
            assert len(block) == len(set(block)) == len(rows) * len(cols)  # a whole rectangle
            assert max(rows) - min(rows) + 1 == len(rows) and max(cols) - min(cols) + 1 == len(cols)
