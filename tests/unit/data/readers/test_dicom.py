"""DICOM through pydicom's own test files: pixel values against the standard's formulas
computed by hand (and pydicom's modality LUT), every transfer syntax the same image,
headless files (no preamble, no file meta) the same image, colour, frames, and what is
skipped and why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.pixels import apply_modality_lut

from selfsup.data.pixels import DataError, Reading
from selfsup.data.readers.dicom import DicomUnreadable, NotAnImage, read_dicom_frame, read_header
from selfsup.data.readers.folders import ImageFolderDataset

FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped with pydicom
CR_MONOCHROME1 = FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"


def linear_window(value: float, center: float, width: float) -> float:
    """PS3.3 C.11.2.1.2.1 (LINEAR), written out, scaled to [0, 1]."""
    if value <= center - 0.5 - (width - 1) / 2:
        return 0.0
    if value > center - 0.5 + (width - 1) / 2:
        return 1.0
    return (value - (center - 0.5)) / (width - 1) + 0.5


def test_ct_in_hounsfield_units_through_a_lung_window():
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    image = read_dicom_frame(FILES / "CT_small.dcm", 0, Reading(window="lung"))
    assert image.shape == (1, 128, 128) and image.dtype == torch.float32
    hu = apply_modality_lut(ds.pixel_array, ds)
    for r, c in [(64, 60), (64, 63), (10, 10), (100, 30)]:
        stored = int(ds.pixel_array[r, c])
        assert hu[r, c] == stored * 1 - 1024  # RescaleSlope 1, RescaleIntercept -1024
        assert image[0, r, c].item() == pytest.approx(
            linear_window(stored - 1024, -600, 1500), abs=1e-6
        )


def test_mr_uses_the_files_own_window():
    ds = pydicom.dcmread(FILES / "MR_small.dcm")
    assert (ds.WindowCenter, ds.WindowWidth) == (600, 1600)
    image = read_dicom_frame(FILES / "MR_small.dcm", 0, Reading())
    for c in range(10, 14):
        expected = linear_window(float(ds.pixel_array[10, c]), 600, 1600)
        assert image[0, 10, c].item() == pytest.approx(expected, abs=1e-6)
    # center,width given explicitly gives the same as the file's own window.
    assert torch.equal(
        image, read_dicom_frame(FILES / "MR_small.dcm", 0, Reading(window="600,1600"))
    )


def test_monochrome1_is_inverted_after_the_rescale_and_window():
    ds = pydicom.dcmread(CR_MONOCHROME1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = read_dicom_frame(CR_MONOCHROME1, 0, Reading())
    for c in range(5, 8):
        value = float(ds.pixel_array[5, c]) * 0.684 + 200  # RescaleSlope/Intercept
        expected = 1.0 - linear_window(value, float(ds.WindowCenter), float(ds.WindowWidth))
        assert image[0, 5, c].item() == pytest.approx(expected, abs=1e-5)


def test_percentile_and_dtype_policies_without_a_window():
    image = read_dicom_frame(FILES / "CT_small.dcm", 0, Reading(window="percentile"))
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    lo, hi = np.percentile(hu, (0.5, 99.5))
    expected = np.clip((hu - lo) / (hi - lo), 0, 1)
    assert np.allclose(image[0].numpy(), expected, atol=1e-6)
    # dtype: signed 16-bit stored range, shifted by the intercept, maps to [0, 1].
    dtype = read_dicom_frame(FILES / "CT_small.dcm", 0, Reading())
    assert dtype[0, 64, 60].item() == pytest.approx((2189 - 1024 + 32768 + 1024) / 65535, abs=1e-6)


@pytest.mark.parametrize(
    "variant",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm", "MR_small_implicit.dcm"],
)  # fmt: skip
def test_compressed_and_big_endian_variants_read_as_the_same_image(variant):
    reference = read_dicom_frame(FILES / "MR_small.dcm", 0, Reading())
    assert torch.equal(read_dicom_frame(FILES / variant, 0, Reading()), reference)


def test_colour_files_come_as_rgb():
    rle = read_dicom_frame(FILES / "SC_rgb_rle.dcm", 0, Reading())
    jpeg_lossless = read_dicom_frame(FILES / "SC_rgb_jpeg_gdcm.dcm", 0, Reading())
    ybr_baseline = read_dicom_frame(FILES / "SC_rgb_dcmtk_+eb+cy+np.dcm", 0, Reading())
    assert rle.shape == (3, 100, 100) and torch.equal(rle, jpeg_lossless)
    assert (ybr_baseline - rle).abs().mean() < 0.02  # lossy JPEG of YBR, converted to RGB
    palette = read_dicom_frame(FILES / "examples_palette.dcm", 0, Reading())
    assert palette.shape == (3, 350, 800) and palette.min() >= 0 and palette.max() <= 1


def test_files_without_the_preamble_read(tmp_path):
    stripped = tmp_path / "no_preamble"
    stripped.write_bytes((FILES / "MR_small.dcm").read_bytes()[132:])  # no preamble, no DICM
    reference = read_dicom_frame(FILES / "MR_small.dcm", 0, Reading())
    assert torch.equal(read_dicom_frame(stripped, 0, Reading()), reference)


def write_headless(source: Path, path: Path, implicit_vr: bool | None = None, **changes) -> Path:
    """``source``'s data set alone, as old scanners and PACS exports write it: no preamble,
    no file meta group; re-encoded as implicit VR little endian where ``implicit_vr``."""
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    del ds.file_meta
    ds.preamble = None
    encoding = {"implicit_vr": True, "little_endian": True, "force_encoding": True}
    pydicom.dcmwrite(path, ds, enforce_file_format=False, **(encoding if implicit_vr else {}))
    return path


def assert_headless(path: Path, encoding: tuple[bool, bool]) -> None:
    """No ``DICM`` after a preamble and no group 0002: the data set's first element (the
    lowest tag, as written in order) opens the file, and pydicom finds no meta."""
    raw = path.read_bytes()
    assert raw[128:132] != b"DICM"
    assert int.from_bytes(raw[:2], "little" if encoding[1] else "big") == 0x0008
    ds = pydicom.dcmread(path, force=True)
    assert ds.original_encoding == encoding and len(ds.file_meta) == 0
    assert not any(elem.tag.group == 0x0002 for elem in ds)


@pytest.mark.parametrize(
    "source,implicit_vr,encoding",
    [("CT_small.dcm", False, (False, True)), ("CT_small.dcm", True, (True, True)),
     ("MR_small.dcm", False, (False, True)), ("MR_small_implicit.dcm", False, (True, True)),
     ("MR_small_bigendian.dcm", False, (False, False))],
)  # fmt: skip
def test_headless_files_read_as_their_originals(tmp_path, source, implicit_vr, encoding):
    # Without a file meta group there is no transfer syntax; the data set's own encoding
    # names it (pydicom refuses to decode the pixels without one).
    headless = write_headless(FILES / source, tmp_path / "IM0001", implicit_vr)
    assert_headless(headless, encoding)
    reference = read_dicom_frame(FILES / source, 0, Reading())
    assert torch.equal(read_dicom_frame(headless, 0, Reading()), reference)


def test_pydicoms_no_meta_file_is_ct_small_cut_one_byte_early(tmp_path):
    # pydicom's no_meta.dcm opens with the last byte of the meta group it was cut from
    # ("CLUNIE1 "'s space), so its first "element" is (0820,0500) and pydicom reads one
    # unknown element: no pixels, rightly skipped. From its second byte on it is CT_small's
    # data set, headless, and reads as pydicom decodes it given the transfer syntax.
    raw = (FILES / "no_meta.dcm").read_bytes()
    ct = (FILES / "CT_small.dcm").read_bytes()
    assert ct[-len(raw) :] == raw and raw[:1] == b" "
    with pytest.raises(DicomUnreadable):
        read_header(FILES / "no_meta.dcm")
    headless = tmp_path / "no_meta.dcm"
    headless.write_bytes(raw[1:])
    assert_headless(headless, (False, True))
    by_pydicom = pydicom.dcmread(headless, force=True)
    by_pydicom.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(read_header(headless).pixel_array, by_pydicom.pixel_array)
    reference = read_dicom_frame(FILES / "CT_small.dcm", 0, Reading(window="lung"))
    assert torch.equal(read_dicom_frame(headless, 0, Reading(window="lung")), reference)


def test_a_folder_of_headless_files_skips_none(tmp_path):
    (tmp_path / "no_meta.dcm").write_bytes((FILES / "no_meta.dcm").read_bytes()[1:])
    write_headless(FILES / "MR_small.dcm", tmp_path / "IM0001", implicit_vr=True)
    write_headless(FILES / "MR_small_bigendian.dcm", tmp_path / "IM0002")
    ds = ImageFolderDataset(tmp_path, labelled=False)
    images = [ds[i][0] for i in range(len(ds))]
    assert len(images) == 3 and ds.skipped() == []
    assert ds.summary()["dicom_files"] == 3 and ds.summary()["unreadable"] == 0


def test_a_missing_photometric_interpretation_reads_as_monochrome2(tmp_path):
    # One sample per pixel and no Photometric Interpretation (ACR-NEMA era files): the
    # standard's default reading, where pydicom refuses to decode.
    bare = write_headless(FILES / "MR_small.dcm", tmp_path / "bare", PhotometricInterpretation=None)
    given = write_headless(FILES / "MR_small.dcm", tmp_path / "given",
                           PhotometricInterpretation="MONOCHROME2")  # fmt: skip
    by_pydicom = pydicom.dcmread(bare, force=True)
    assert "PhotometricInterpretation" not in by_pydicom
    by_pydicom.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    with pytest.raises(AttributeError, match="Photometric Interpretation"):
        np.asarray(by_pydicom.pixel_array)
    image = read_dicom_frame(bare, 0, Reading())
    assert torch.equal(image, read_dicom_frame(given, 0, Reading()))
    assert torch.equal(image, read_dicom_frame(FILES / "MR_small.dcm", 0, Reading()))


def test_undecodable_and_non_image_objects_say_why():
    with pytest.raises(DicomUnreadable, match="JPEG Extended"):
        read_dicom_frame(FILES / "JPEG-lossy.dcm", 0, Reading())  # 12-bit lossy JPEG
    for name, modality in (("rtdose.dcm", "RTDOSE"), ("liver_1frame.dcm", "SEG")):
        with pytest.raises(NotAnImage, match=modality):
            read_header(FILES / name)


def test_a_file_cut_inside_its_compressed_pixels_is_unreadable_not_an_object(tmp_path):
    # pydicom drops every element it had read when encapsulated pixel data runs past the
    # end of the file, leaving only the file meta's SOP class: a broken image, not a
    # "Multi-frame Image Storage without pixel data".
    cut = tmp_path / "us.dcm"
    cut.write_bytes((FILES / "examples_ybr_color.dcm").read_bytes()[:-100])
    with pytest.raises(DicomUnreadable, match="truncated"):
        read_header(cut)


@pytest.fixture
def dicom_tree(tmp_path) -> Path:
    """A study folder: CT and MR (one without a suffix), a 30-frame ultrasound, a dose
    grid (not an image), a truncated file, and a notes file."""
    root = tmp_path / "study"
    (root / "ct").mkdir(parents=True)
    (root / "mr").mkdir()
    shutil.copy(FILES / "CT_small.dcm", root / "ct" / "1.dcm")
    shutil.copy(FILES / "MR_small.dcm", root / "mr" / "IM0001")  # no suffix
    shutil.copy(FILES / "examples_ybr_color.dcm", root / "us.dcm")
    shutil.copy(FILES / "rtdose.dcm", root / "dose.dcm")
    (root / "mr" / "IM0002").write_bytes((FILES / "MR_small.dcm").read_bytes()[:2000])
    (root / "notes.txt").write_text("scanned 2024")
    return root


def test_a_dicom_tree_reads_every_frame_and_reports_what_it_skips(dicom_tree):
    ds = ImageFolderDataset(dicom_tree, labelled=False, reading=Reading(window="percentile"))
    # CT 1 + MR 1 + 30 ultrasound frames + the truncated MR (an entry, marked bad)
    assert len(ds) == 33
    assert [Path(x.split(" (")[0]).name for x in ds.not_images] == ["dose.dcm"]
    images = [ds[i][0] for i in range(len(ds))]
    assert all(im.min() >= 0 and im.max() <= 1 for im in images)
    assert ds.skipped() == [str(dicom_tree / "mr" / "IM0002")]
    summary = ds.summary()
    assert summary["images"] == 32 and summary["dicom_files"] == 3 and summary["dicom_frames"] == 32
    assert summary["not_images"] == 1 and summary["unreadable"] == 1
    middle = ImageFolderDataset(dicom_tree, labelled=False, reading=Reading(frames="middle"))
    assert len(middle) == 4


def test_strict_lists_the_broken_file_and_the_non_image(dicom_tree):
    ds = ImageFolderDataset(dicom_tree, labelled=False, strict=True)
    with pytest.raises(DataError) as e:
        ds.scan()
    assert "IM0002" in str(e.value) and "dose.dcm" in str(e.value)


def test_malformed_reading_options_are_one_line_before_any_file_is_read():
    with pytest.raises(DataError, match="center,width"):
        Reading(window="lungs")
    with pytest.raises(DataError, match="slice_context is -1"):
        Reading(slice_context=-1)


def test_shipped_files_are_found_locally():
    # The tests must never download pydicom's optional data: every file is in the package.
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_ybr_color.dcm", "JPEG-lossy.dcm"):
        assert os.path.isfile(FILES / name)
