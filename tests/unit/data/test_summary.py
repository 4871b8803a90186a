"""What ``selfsup data inspect`` and a run's first line report: the counts agree with the
lists of files skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from selfsup.data.readers.folders import ImageFolderDataset
from selfsup.data.summary import describe, one_line

FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped with pydicom


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """A good PNG, a CT whose header reads but whose pixel data is cut short, and a file
    that is no image at all; sorted so that the good one is read first and the CT's
    pixels fail only when the summary's samples read it."""
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.dcm").write_bytes((FILES / "CT_small.dcm").read_bytes()[:-20000])
    (tmp_path / "c").write_bytes(b"scanned 2024, not an image")
    return tmp_path


def test_the_counts_agree_with_the_skipped_lists(mixed_folder):
    ds = ImageFolderDataset(mixed_folder, labelled=False)
    assert ds.skipped() == [str(mixed_folder / "c")]  # the CT's header reads: not yet found
    info = describe(ds)
    assert info["skipped_unreadable"] == [str(mixed_folder / "b.dcm"), str(mixed_folder / "c")]
    assert info["unreadable"] == len(info["skipped_unreadable"]) == 2
    assert info["not_images"] == len(info["skipped_not_images"]) == 0
    assert info["images"] == info["files"] == 1 and info["dicom_files"] == 0
    assert one_line(info).endswith("1 images, 1 channel(s), 1x8x8 px, skipped: 2 unreadable, "
                                   "0 not images")  # fmt: skip


def test_a_multi_frame_file_found_unreadable_counts_none_of_its_frames(tmp_path):
    # Its frames are one decode: the summary's samples read a few of the 30 and fail, and
    # the frames not read are no more images than those.
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "a.png")
    ultrasound = bytearray((FILES / "examples_ybr_color.dcm").read_bytes())
    middle = len(ultrasound) // 2
    ultrasound[middle : middle + 50000] = bytes(50000)  # JPEG fragments overwritten
    (tmp_path / "us.dcm").write_bytes(ultrasound)
    ds = ImageFolderDataset(tmp_path, labelled=False)
    assert len(ds) == 31 and ds.skipped() == []
    info = describe(ds, samples=4)
    assert info["skipped_unreadable"] == [str(tmp_path / "us.dcm")] and info["unreadable"] == 1
    assert info["images"] == 1 and info["dicom_files"] == info["dicom_frames"] == 0
