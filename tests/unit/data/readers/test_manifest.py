"""CSV/TSV manifests: paths relative to the table, splits, labels, groups, slices of
volumes, and missing files named by their line numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from selfsup.data.datasets import open_dataset
from selfsup.data.pixels import DataError, Reading
from selfsup.data.readers.dicom import read_dicom_frame
from selfsup.data.readers.volumes import read_volume_slice

FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture
def study(tmp_path) -> Path:
    """PNGs, a DICOM file and a volume in subfolders of the table's folder."""
    (tmp_path / "png").mkdir()
    (tmp_path / "dcm").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
            tmp_path / f"png/{i}.png"
        )
    shutil.copy(FILES / "MR_small.dcm", tmp_path / "dcm" / "mr.dcm")
    volume = rng.normal(0, 1, (8, 9, 5)).astype(np.float32)
    nib.Nifti1Image(volume, np.eye(4)).to_filename(tmp_path / "ct.nii.gz")
    return tmp_path


def write(path: Path, rows: list[str], sep: str = ",") -> Path:
    path.write_text("\n".join(r.replace(",", sep) for r in rows) + "\n")
    return path


def test_rows_read_relative_to_the_table_with_splits_labels_and_groups(study):
    table = write(study / "table.csv", [
        "path,label,group,split,site,slice",
        "png/0.png,normal,p1,train,a,", "png/1.png,pneumonia,p1,train,a,",
        "png/2.png,normal,p2,train,b,", "dcm/mr.dcm,pneumonia,p3,train,b,",
        "ct.nii.gz,normal,p4,test,a,2", "png/3.png,pneumonia,p5,test,a,",
        "png/4.png,normal,p6,val,a,",
    ])  # fmt: skip
    train = open_dataset(str(table), "train")
    test = open_dataset(str(table), "test", reading=Reading(window="percentile"))
    assert len(train) == 4 and len(test) == 2 and len(open_dataset(str(table), "val")) == 1
    assert train.classes == ["normal", "pneumonia"] == test.classes  # sorted names
    assert train.targets.tolist() == [0, 1, 0, 1] and test.targets.tolist() == [0, 1]
    assert train.groups.tolist() == ["p1", "p1", "p2", "p3"] and train.rows.tolist() == [2, 3, 4, 5]
    assert "site" in train.columns  # kept for later, not read
    # Each row is read by its kind: the DICOM and the volume slice as their readers read them.
    assert torch.equal(train[3][0], read_dicom_frame(FILES / "MR_small.dcm", 0, Reading()))
    volume_slice = read_volume_slice(study / "ct.nii.gz", 2, Reading(window="percentile"))
    assert torch.equal(test[0][0], volume_slice)
    assert train[0][0].shape == (1, 16, 16)


def test_tsv_and_absolute_paths_and_an_unlabelled_table(study):
    table = write(study / "t.tsv", ["path", str(study / "png" / "0.png"), "png/1.png"], sep="\t")
    ds = open_dataset(str(table), "train")
    assert len(ds) == 2 and ds.targets is None and ds.groups is None
    with pytest.raises(DataError, match="no split column"):
        open_dataset(str(table), "test")


def test_missing_files_are_named_by_their_line_numbers(study):
    table = write(study / "t.csv", ["path,label", "png/0.png,a", "png/missing.png,b",
                                     "png/1.png,a", "gone.dcm,b"])  # fmt: skip
    with pytest.raises(DataError) as e:
        open_dataset(str(table), "train")
    message = str(e.value)
    assert "2 row(s) with files missing" in message
    assert "lines 3 (png/missing.png), 5 (gone.dcm)" in message and "\n" not in message


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (["file,label", "png/0.png,a"], "no 'path' column"),
        (["path,label,split", "png/0.png,a,training"], "split values"),
        (["path,label", "png/0.png,a", "png/1.png,"], "no label"),
        (["path", "ct.nii.gz"], "volumes without a slice"),
        (["path,slice", "ct.nii.gz,middle"], "not a whole number"),
    ],
)
def test_bad_tables_are_one_line(study, rows, problem):
    with pytest.raises(DataError, match=problem) as e:
        open_dataset(str(write(study / "t.csv", rows)), "train")
    assert "\n" not in str(e.value)
