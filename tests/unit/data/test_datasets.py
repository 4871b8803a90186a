"""Datasets: the npz format, MedMNIST's layout, image folders, 16-bit intensity, the built-in set."""

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.datasets import DataError, load_npz, open_dataset, to_tensor_image
from selfsup.data.readers.patterns import CLASSES, generate_patterns
from selfsup.transforms import EvalTransform, SimCLRTransform


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_roundtrip(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    y = np.arange(10, dtype=np.uint8) % 3
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    ds = open_dataset(str(path), "train")
    image, label = ds[7]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
    assert torch.equal(image, torch.from_numpy(x[7]).permute(2, 0, 1)) and label == 1
    assert len(open_dataset(str(path), "test")) == 4


@pytest.mark.parametrize(
    "arrays,message",
    [
        (dict(images=np.zeros((2, 8, 8, 3), np.uint8)), "x_train"),
        (dict(x_train=np.zeros((2, 8, 8, 3), np.float32)), "uint8"),
        (dict(x_train=np.zeros((2, 3, 8, 8), np.uint8)), "channels-first"),
        (
            dict(x_train=np.zeros((2, 8, 8, 3), np.uint8), y_train=np.zeros(3)),
            "3 labels for 2 images",
        ),
    ],
)
def test_malformed_npz_is_refused_with_the_fix(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        open_dataset(str(path), "train")


def test_not_an_npz_and_missing_paths(tmp_path):
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DataError, match="Cannot read"):
        open_dataset(str(tmp_path / "x.npz"), "train")
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(str(tmp_path / "nope"), "train")


def test_medmnist_layout_grayscale(tmp_path):
    path = write_npz(
        tmp_path / "pneumoniamnist.npz",
        train_images=np.full((6, 28, 28), 200, np.uint8),
        train_labels=np.arange(6).reshape(6, 1) % 2,
        val_images=np.zeros((2, 28, 28), np.uint8),
        val_labels=np.zeros((2, 1)),
        test_images=np.zeros((3, 28, 28), np.uint8),
        test_labels=np.ones((3, 1)),
    )
    ds = load_npz(path, "train")
    image, label = ds[3]
    assert image.shape == (1, 28, 28) and label == 1 and len(ds) == 6


def test_medmnist_multilabel_is_read_and_3d_is_refused(tmp_path):
    findings = np.eye(4, 14, dtype=np.uint8)
    multi = write_npz(
        tmp_path / "chest.npz",
        train_images=np.zeros((4, 28, 28), np.uint8),
        train_labels=findings,
    )
    ds = load_npz(multi, "train")
    assert ds.multilabel and np.array_equal(ds.targets, findings) and len(ds.classes) == 14
    vol = write_npz(
        tmp_path / "organ3d.npz",
        train_images=np.zeros((4, 28, 28, 28), np.uint8),
        train_labels=np.zeros((4, 1)),
    )
    with pytest.raises(DataError, match="3D"):
        load_npz(vol, "train")


def test_sixteen_bit_intensity_policies():
    x = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    full = to_tensor_image(x, "dtype")
    assert full.dtype == torch.float32 and full.shape == (1, 2, 2)
    assert full.flatten().tolist() == pytest.approx([0, 1000 / 65535, 30000 / 65535, 1.0])
    window = to_tensor_image(x, "percentile", window=(0, 100))
    assert window.min() == 0 and window.max() == 1


def test_image_folders_labelled_unlabelled_and_16_bit(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((10, 12, 3), 50, np.uint8)).save(
                tmp_path / split / cls / "x.png"
            )
    train = open_dataset(str(tmp_path), "train")
    assert train.classes == ["a", "b"] and len(train) == 2 and train[1][1] == 1
    assert train[0][0].shape == (3, 10, 12)
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(flat / "ct.png")
    ds = open_dataset(str(flat), "train")
    image, label = ds[0]
    assert label == -1 and image.dtype == torch.float32
    assert image.max().item() == pytest.approx(
        40000 / 65535, rel=1e-4
    )  # converted, not clipped to 8 bits


def test_transforms_give_views_of_the_right_size_for_8_and_16_bit():
    t = SimCLRTransform(size=16, blur_prob=0.5, solarize_prob=0.2)
    for image in (torch.randint(0, 256, (3, 24, 20), dtype=torch.uint8), torch.rand(3, 24, 20)):
        views = t(image)
        assert len(views) == 2 and all(
            v.shape == (3, 16, 16) and v.dtype == torch.float32 for v in views
        )
    gray = SimCLRTransform(size=16, grayscale=True, mean=(0.5,), std=(0.25,))
    assert gray(torch.rand(1, 20, 20))[0].shape == (1, 16, 16)
    assert EvalTransform(16)(torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)).shape == (
        3,
        16,
        16,
    )


def test_builtin_patterns_are_deterministic_balanced_and_split():
    x0, y0 = generate_patterns(200, seed=0)
    x1, y1 = generate_patterns(200, seed=0)
    assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    assert x0.shape == (200, 32, 32, 3) and x0.dtype == np.uint8
    assert np.bincount(y0, minlength=len(CLASSES)).tolist() == [200 // len(CLASSES)] * len(CLASSES)
    xt, _ = generate_patterns(200, seed=1)
    assert not np.array_equal(x0, xt)


def test_a_picture_is_an_image_file_or_a_dicom_file_as_the_readers_read_it(tmp_path):
    """What `selfsup attention` and `reconstruct` draw from: a DICOM file gives what the
    DICOM reader gives (its own window, the middle frame), a PNG what read_image gives,
    anything else one line."""
    from pathlib import Path

    import pydicom
    import pytest
    import torch
    from PIL import Image

    from selfsup.data.datasets import read_image, read_picture
    from selfsup.data.pixels import DataError, Reading
    from selfsup.data.readers.dicom import read_dicom_frame

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    ct = tmp_path / "ct"  # no suffix, as PACS exports name them
    ct.write_bytes((files / "CT_small.dcm").read_bytes())
    assert torch.equal(read_picture(ct), read_dicom_frame(ct, 0, Reading()))
    us = files / "examples_ybr_color.dcm"  # 30 frames: the middle one
    assert torch.equal(read_picture(us), read_dicom_frame(us, 15, Reading()))
    Image.new("L", (8, 6), 7).save(tmp_path / "a.png")
    assert torch.equal(read_picture(tmp_path / "a.png"), read_image(tmp_path / "a.png"))
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(DataError, match="is not an image selfsup reads"):
        read_picture(tmp_path / "notes.txt")
