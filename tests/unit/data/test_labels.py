"""Labels as users save them: class names read, never misread; every refusal one line with the fix."""

import ast

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.data.readers.patterns as patterns
from selfsup.data.datasets import ArrayDataset, DataError, load_npz, open_dataset
from selfsup.eval.metrics import label_warnings

X4 = np.zeros((4, 8, 8, 3), np.uint8)


def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_string_labels_become_the_sorted_names_of_every_split(tmp_path):
    path = npz(tmp_path / "pets.npz", x_train=X4, y_train=np.array(["dog", "cat", "dog", "cat"]),
               x_test=X4[:3], y_test=np.array(["bird", "cat", "dog"]))  # fmt: skip
    train, test = load_npz(path, "train"), load_npz(path, "test")
    # "bird" only in test: the indices still agree between the splits.
    assert train.classes == test.classes == ["bird", "cat", "dog"]
    assert train.targets.tolist() == [2, 1, 2, 1] and test.targets.tolist() == [0, 1, 2]
    assert [train[i][1] for i in range(4)] == [2, 1, 2, 1]


def test_string_labels_follow_a_classes_array_and_bytes_read_as_names(tmp_path):
    path = npz(tmp_path / "cxr.npz", x_train=X4, y_train=np.array([b"sick", b"ok", b"ok", b"sick"]),
               x_test=X4[:1], y_test=np.array([b"ok"]), classes=np.array(["ok", "sick"]))  # fmt: skip
    ds = load_npz(path, "train")
    assert ds.classes == ["ok", "sick"] and ds.targets.tolist() == [1, 0, 0, 1]


def test_whole_number_float_labels_are_read_as_indices(tmp_path):
    path = npz(tmp_path / "f.npz", x_train=X4, y_train=np.array([0.0, 1.0, 2.0, 1.0]))
    assert load_npz(path, "train").targets.tolist() == [0, 1, 2, 1]


BAD_LABELS = [
    # (arrays, words the message must hold: the problem and the fix)
    (dict(x_train=X4, y_train=np.full((4, 3), -1, np.int64)),
     ["y_train holds values other than 0 and 1", "-1", "to 0 or 1 first"]),
    (dict(train_images=X4, train_labels=np.zeros((4, 14)), test_labels=np.zeros((2, 13))),
     ["14 finding columns", "test_labels has 13 finding columns", "same findings"]),
    (dict(x_train=X4, y_train=np.zeros(5, np.int64)), ["5 labels for 4 images", "one label per image"]),
    (dict(train_images=X4, train_labels=np.zeros((3, 1))), ["3 labels for 4 images in train_images"]),
    (dict(x_train=X4, y_train=np.array([0.0, 0.5, 1.0, 1.0])), ["not whole numbers", "0.5", "ints"]),
    (dict(x_train=X4, y_train=np.array([0.0, np.nan, 1.0, 1.0])), ["not whole numbers", "nan"]),
    (dict(x_train=X4, y_train=np.array(["a", "b", "a", "b"]), y_test=np.array([0, 1])),
     ["holds class names", "y_test", "one kind"]),
    (dict(x_train=X4, y_train=np.array([0, 1, 2, 3]), classes=np.array(["a", "b"])),
     ["class index 3", "names only 2 classes"]),
    (dict(x_train=X4, y_train=np.array(["a", "b", "c", "a"]), classes=np.array(["a", "b"])),
     ["['c'] are not in the classes array"]),
    (dict(x_train=X4, y_train=np.array([1 + 1j] * 4)), ["complex", "int class indices or str"]),
    (dict(x_train=np.zeros((0, 8, 8, 3), np.uint8), y_train=np.zeros(0)), ["holds no images"]),
    (dict(x_train=np.zeros((2, 4, 8, 8, 3), np.uint8)), ["3D volumes are not supported"]),
]  # fmt: skip


@pytest.mark.parametrize("arrays,words", BAD_LABELS)
def test_label_problems_are_one_line_naming_the_fix(tmp_path, arrays, words):
    path = npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as error:
        open_dataset(str(path), "train")
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_object_arrays_are_refused_with_how_to_save_them(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x_train=X4, y_train=np.array(["cat", 1, None, "dog"], dtype=object))
    with pytest.raises(DataError, match=r"y_train is an object array.*str or int array"):
        load_npz(path, "train")


def test_array_dataset_never_flattens_several_labels_per_image():
    with pytest.raises(DataError, match=r"labels of shape \(4, 2, 1\) for 4 images"):
        ArrayDataset(X4, np.zeros((4, 2, 1)), source="mine")
    with pytest.raises(DataError, match=r"mine: labels holds values other than 0 and 1"):
        ArrayDataset(X4, np.full((4, 2), 2), source="mine")
    assert ArrayDataset(X4, np.arange(4).reshape(4, 1)).targets.tolist() == [0, 1, 2, 3]
    assert ArrayDataset(X4, np.eye(4, 2)).targets.tolist() == np.eye(4, 2).tolist()


def test_a_folder_of_unreadable_files_is_one_line(tmp_path):
    for i in range(3):
        (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / "a" / f"{i}.png").write_bytes(b"broken" * i)
    with pytest.raises(DataError, match=r"None of the 3 image files .* replace them") as error:
        open_dataset(str(tmp_path), "train")
    assert "\n" not in str(error.value)


def test_read_item_says_which_file_stood_in(tmp_path):
    for i, colour in enumerate((10, 20, 30)):
        (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), colour).save(tmp_path / "train" / "a" / f"{i}.png")
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"")
    ds = open_dataset(str(tmp_path), "train")
    image, label, source = ds.read_item(1)
    assert source == 2 and int(image[0, 0, 0]) == 30 and label == 0
    assert ds.read_item(0)[2] == 0 and torch.equal(ds[1][0], image)


def test_patterns_makes_arrays_and_datasets_wraps_them():
    with open(patterns.__file__) as f:
        tree = ast.parse(f.read())
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    ]
    assert not [m for m in imported if m and m.startswith("selfsup")]
    ds = open_dataset("patterns", "test")
    assert ds.classes == list(patterns.CLASSES) and len(ds) == patterns.SPLITS["test"][0]


def test_label_warnings_for_one_class_and_classes_never_trained_on():
    one = label_warnings(torch.zeros(5), torch.tensor([0, 0, 0, 1]), ["cat", "dog"])
    assert len(one) == 2
    assert one[0].startswith("the training split has one class (cat)") and "0.75" in one[0]
    assert "1 test image(s) belong to classes with no training images (dog)" in one[1]
    assert label_warnings(torch.tensor([0, 1, 1]), torch.tensor([1, 0])) == []
