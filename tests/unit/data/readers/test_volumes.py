"""Volumes as slices: pixel values against nibabel's canonical reorientation, shapes per
axis, 2.5D channels, 4D policies, the bounded cache, background slices, broken files,
square pixels and reproducible draws."""

import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.testing import data_path

from selfsup.data.pixels import DataError, Reading
from selfsup.data.readers import volumes
from selfsup.data.readers.volumes import (
    VolumeSliceDataset,
    is_volume,
    list_volumes,
    read_volume_slice,
)

# Voxel axes i, j, k lie along A (3 mm), S (1 mm) and L (2 mm): permuted and flipped.
PERMUTED = np.array([[0, 0, -2, 10], [3, 0, 0, -5], [0, 1, 0, 2], [0, 0, 0, 1]], float)


def write(path, data, affine=None, zooms=None):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    img.to_filename(path)
    return path


@pytest.fixture
def permuted(tmp_path):
    data = np.random.default_rng(0).integers(-50, 250, (6, 7, 5)).astype(np.int16)
    return write(tmp_path / "permuted.nii.gz", data, PERMUTED), data


def test_slice_pixels_are_nibabels_canonical_voxels_through_the_window(permuted):
    path, data = permuted
    assert nib.aff2axcodes(PERMUTED) == ("A", "S", "L")
    canonical = nib.as_closest_canonical(nib.load(path)).get_fdata()
    assert canonical.shape == (5, 6, 7)  # (R, A, S) = (k reversed, i, j)
    reading = Reading(window="100,200")  # [0, 200] -> [0, 1]
    s = 4
    image = read_volume_slice(path, s, reading)
    assert image.shape == (1, 6, 5) and image.dtype == torch.float32
    # Axial display: row r is A index 5 - r (anterior on top), column c is R index c.
    for r, c in [(0, 0), (1, 3), (5, 4), (2, 2)]:
        a, rr = 5 - r, c
        by_hand = data[a, s, 4 - rr]  # canonical[R, A, S] = data[A, S, 4 - R]
        assert canonical[rr, a, s] == by_hand
        assert image[0, r, c].item() == pytest.approx(np.clip(by_hand / 200, 0, 1), abs=1e-6)


def test_percentile_and_header_display_range_on_nibabels_examples():
    anatomical = data_path / "anatomical.nii"  # L, A, S: reorientation flips the first axis
    canonical = nib.as_closest_canonical(nib.load(anatomical)).get_fdata()
    lo, hi = np.percentile(canonical, (0.5, 99.5))
    image = read_volume_slice(anatomical, 12, Reading(intensity="percentile"))
    expected = np.clip((canonical[:, ::-1, 12].T - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-5)
    # example4d.nii.gz sets cal_min..cal_max (0..1162): its own display range by default.
    example = data_path / "example4d.nii.gz"
    canonical = nib.as_closest_canonical(nib.load(example)).get_fdata()[..., 1]
    image = read_volume_slice(example, 10, Reading(slice_axis="coronal"), volume=1)
    expected = np.clip(canonical[:, 10, ::-1].T / 1162, 0, 1)
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "axis,shape,count", [("axial", (6, 5), 7), ("coronal", (7, 5), 6), ("sagittal", (7, 6), 5)]
)
def test_slices_along_each_axis_have_the_header_shapes(permuted, axis, shape, count):
    path, _ = permuted
    reading = Reading(slice_axis=axis, slices_per_volume=3)
    assert read_volume_slice(path, count - 1, reading).shape == (1, *shape)
    with pytest.raises(DataError, match=f"{count} {axis} slices"):
        read_volume_slice(path, count, reading)
    ds = VolumeSliceDataset([path], reading)
    assert len(ds) == 3 and ds[2][0].shape == (1, *shape)
    assert ds.summary()["slice_shapes"] == {"x".join(map(str, shape)): 1}


def test_mgh_and_analyze_pair_read_like_nifti(tmp_path):
    mgz = data_path / "test.mgz"  # S, A, R voxel axes, 3x4x5x2
    canonical = nib.as_closest_canonical(nib.load(mgz).slicer[..., 0]).get_fdata()
    image = read_volume_slice(mgz, 1, Reading(slice_axis="sagittal", window="0,10000"))
    np.testing.assert_allclose(image[0].numpy(), np.clip(canonical[1].T[::-1] / 10000 + 0.5, 0, 1))
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    nib.save(nib.Nifti1Pair(data, PERMUTED), tmp_path / "pair.img")
    (tmp_path / "other.txt").write_text("x")
    assert list_volumes(tmp_path) == [tmp_path / "pair.hdr"]
    assert is_volume(tmp_path / "pair.img") and is_volume("A.NII.GZ") and not is_volume("a.png")
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "pair.hdr")).get_fdata()
    image = read_volume_slice(tmp_path / "pair.hdr", 2, Reading())
    np.testing.assert_allclose(image[0].numpy(), canonical[:, ::-1, 2].T / 59, atol=1e-6)


def test_context_channels_are_adjacent_slices_with_edges_repeated(permuted):
    path, _ = permuted
    one = [read_volume_slice(path, s, Reading())[0] for s in range(7)]
    for s in (0, 1, 3, 6):
        image = read_volume_slice(path, s, Reading(slice_context=2))
        assert image.shape == (5, 6, 5)
        for channel, t in enumerate(range(s - 2, s + 3)):
            assert torch.equal(image[channel], one[min(max(t, 0), 6)])
    ds = VolumeSliceDataset([path], Reading(slice_context=1))
    assert ds.channels == 3 and ds[0][0].shape == (3, 6, 5)


@pytest.mark.parametrize("policy,units", [("all", 3), ("first", 2)])
def test_4d_volumes_all_or_first_said_once(tmp_path, capsys, policy, units):
    three = write(tmp_path / "a.nii", np.ones((4, 4, 4), np.float32))
    example = data_path / "example4d.nii.gz"  # two 3D volumes
    reading = Reading(volumes_4d=policy, slices_per_volume=2, foreground_threshold=0)
    ds = VolumeSliceDataset([three, example], reading, labels=np.array([0, 1]))
    assert len(ds) == 2 * units and ds.targets.tolist() == [0, 0] + [1, 1] * (units - 1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 volume files are 4D" in err
    assert ("only the first" in err) == (policy == "first")
    summary = ds.summary()
    assert (summary["volumes"], summary["volumes_4d"], summary["volumes_3d"]) == (2, 1, units)
    torch.manual_seed(0)
    image, label = ds[2 * units - 1]  # the last 3D volume: the second one, or the first
    last = units - 2
    candidates = [read_volume_slice(example, s, reading, volume=last) for s in range(24)]
    assert label == 1 and any(torch.equal(image, c) for c in candidates)


def test_cache_holds_at_most_volume_cache_decoded_volumes(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    files = [write(tmp_path / f"v{i}.nii", rng.random((5, 5, 4), np.float32)) for i in range(6)]
    decodes = []
    decode = volumes._decode
    monkeypatch.setattr(volumes, "_decode", lambda *a: decodes.append(a[0]) or decode(*a))

    def run(cache, order):
        ds = VolumeSliceDataset(files, Reading(slices_per_volume=2, volume_cache=cache))
        decodes.clear()
        for i in order:
            ds[i]
            assert len(ds._cache.items) <= cache
        return len(decodes)

    assert run(2, range(12)) == 6  # each volume decoded once, in turn
    cycling = [0, 2, 4] * 3  # volumes 0, 1, 2 in turn: thrashes a cache of 2
    assert run(2, cycling) == 9 and run(3, cycling) == 3 and run(0, cycling) == 9
    ds = VolumeSliceDataset(files, Reading(volume_cache=2))
    ds[0]
    assert len(pickle.loads(pickle.dumps(ds))._cache.items) == 0  # a worker starts empty


def test_background_slices_are_not_drawn(tmp_path):
    data = np.zeros((8, 8, 10), np.float32)
    for s in (3, 4, 5):
        data[2:6, 2:6, s] = 10 * s  # a quarter of the slice: foreground
    data[1:7, 1:7, 4] = 40  # over half of slice 4
    path = write(tmp_path / "sparse.nii.gz", data)
    slices = [read_volume_slice(path, s, Reading()) for s in range(10)]

    def drawn(threshold):
        ds = VolumeSliceDataset([path], Reading(foreground_threshold=threshold))
        found = set()
        for seed in range(40):
            torch.manual_seed(seed)
            image = ds[seed % len(ds)][0]
            found |= {s for s in range(10) if torch.equal(image, slices[s])}
        return found

    assert drawn(0.05) == {3, 4, 5}
    assert drawn(0.0) - {3, 4, 5}  # without the threshold, empty slices come up
    assert drawn(0.3) == {4}
    assert drawn(0.9) == {4}  # none passes: the most covered


def test_broken_files_are_skipped_and_listed(tmp_path):
    good = write(tmp_path / "good.nii", np.random.default_rng(2).random((6, 6, 6), np.float32))
    noise = np.random.default_rng(3).integers(0, 30000, (24, 24, 24)).astype(np.int16)
    full = write(tmp_path / "full.nii.gz", noise).read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(full[: len(full) // 2])  # the header reads, the data does not
    text = tmp_path / "text.nii"
    text.write_text("not a volume\n")
    files = [good, truncated, text]
    ds = VolumeSliceDataset(files, Reading(slices_per_volume=2), source=str(tmp_path))
    assert ds.skipped() == [str(text)] and len(ds) == 4
    for i in range(len(ds)):
        image, label, source = ds.read_item(i)
        assert image.shape == (1, 6, 6) and label == -1 and source == i % 2
    assert ds.skipped() == [str(truncated), str(text)]
    assert len(ds.summary()["skipped"]) == 2
    strict = VolumeSliceDataset(files, Reading(), strict=True)
    with pytest.raises(DataError, match="2 of 3 volume files") as e:
        strict.scan()
    assert "truncated.nii.gz (EOFError" in str(e.value) and "text.nii (ImageFileError" in str(
        e.value
    )
    with pytest.raises(DataError, match=r"None of the 1 volume files .*can be read"):
        VolumeSliceDataset([text], Reading(), source=str(tmp_path))
    with pytest.raises(DataError, match="None of the 1 volume files"):
        VolumeSliceDataset([truncated], Reading())[0]
    with pytest.raises(DataError, match="No volume files"):
        VolumeSliceDataset([], Reading())


def test_workers_report_broken_files_to_the_main_process(tmp_path):
    good = write(tmp_path / "good.nii", np.ones((4, 4, 4), np.float32))
    noise = np.random.default_rng(3).integers(0, 30000, (24, 24, 24)).astype(np.int16)
    full = write(tmp_path / "full.nii.gz", noise).read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(full[: len(full) // 2])
    ds = VolumeSliceDataset([good, truncated], Reading(slices_per_volume=2))
    ds[0]  # the main process's cache is not sent to the worker
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1))
    assert batches[0][0].shape == (4, 1, 4, 4) and ds.skipped() == [str(truncated)]


@pytest.mark.parametrize(
    "axis,shape", [("axial", (18, 4)), ("coronal", (30, 4)), ("sagittal", (10, 6))]
)
def test_square_pixels_resample_at_the_finer_spacing(tmp_path, axis, shape):
    data = np.random.default_rng(4).random((4, 6, 5), np.float32)  # R 0.5, A 1.5, S 3 mm
    path = write(tmp_path / "aniso.nii", data, np.diag([0.5, 1.5, 3.0, 1.0]), (0.5, 1.5, 3.0))
    reading = Reading(slice_axis=axis, square_pixels=True, slice_context=1)
    image = read_volume_slice(path, 2, reading)
    assert image.shape == (3, *shape) and image.min() >= 0 and image.max() <= 1
    ds = VolumeSliceDataset([path], reading)
    assert ds[0][0].shape == (3, *shape)
    summary = ds.summary()
    assert summary["slice_shapes"] == {f"{shape[0]}x{shape[1]}": 1}
    assert summary["spacing_mm"] == {"min": [0.5, 1.5, 3.0], "max": [0.5, 1.5, 3.0]}


def test_draws_repeat_under_the_same_seed(tmp_path):
    path = write(tmp_path / "v.nii", np.random.default_rng(5).random((8, 8, 12), np.float32))
    ds = VolumeSliceDataset([path], Reading(slices_per_volume=4))
    fresh = VolumeSliceDataset([path], Reading(slices_per_volume=4))  # a resumed run
    seen = []
    for seed in range(6):
        torch.manual_seed(seed)
        first = ds[3][0]
        torch.rand(5)  # other draws in between
        torch.manual_seed(seed)
        assert torch.equal(first, ds[3][0])
        torch.manual_seed(seed)
        assert torch.equal(first, fresh[3][0])
        seen.append(first)
    assert any(not torch.equal(seen[0], x) for x in seen[1:])


def test_summary_says_what_will_be_read(permuted):
    path, _ = permuted
    ds = VolumeSliceDataset([path], Reading(window="lung", slices_per_volume=5))
    summary = ds.summary()
    assert summary["volumes"] == 1 and summary["items"] == 5 and summary["shapes"] == {"5x6x7": 1}
    assert summary["dtypes"] == {"int16": 1} and summary["spacing_mm"]["min"] == [2.0, 3.0, 1.0]
    assert summary["intensity"].startswith("window center -600, width 1500")
    with pytest.raises(DataError, match="2 labels for 1 volume files"):
        VolumeSliceDataset([path], Reading(), labels=np.array([0, 1]))
