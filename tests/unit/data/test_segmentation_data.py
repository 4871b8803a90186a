"""Masks as data: an npz's m_train/m_test and a folder's images/ + masks/ read back to the
right pixels, with their classes, patients and pixel spacing; wrong masks are one line."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from selfsup.data.pixels import DataError
from selfsup.data.segmentation import open_segmentation


def test_npz_masks_read_back_with_classes_groups_and_spacing(seg_npz):
    raw = np.load(seg_npz)
    train = open_segmentation(str(seg_npz), "train")
    assert train.classes == ["background", "square", "disc"]
    assert len(train) == 40 and train.spacing[0] == (0.5, 0.8) and train.spacing_known
    image, mask = train[7]
    assert image.shape == (1, 32, 32) and np.array_equal(image[0].numpy(), raw["x_train"][7])
    assert np.array_equal(mask.numpy(), raw["m_train"][7])
    assert list(train.groups[:5]) == ["p0", "p0", "p0", "p0", "p1"]
    presence = train.presence()
    assert presence.shape == (40, 2)
    assert presence[4, 0] == 0 and presence[0, 0] == 1  # every fifth image has no square


def _npz(tmp_path, **arrays):
    base = {"x_train": np.zeros((2, 8, 8), np.uint8), "m_train": np.zeros((2, 8, 8), np.uint8),
            "mask_classes": np.array(["background", "organ"])}  # fmt: skip
    base.update(arrays)
    path = tmp_path / "m.npz"
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"m_train": np.zeros((2, 8, 9), np.uint8)}, "mask is 8x9 but its image is 8x8"),
        ({"m_train": np.full((2, 8, 8), 2, np.uint8)}, "mask value 2"),
        ({"m_train": np.full((2, 8, 8), 0.5)}, "fractional"),
        ({"m_train": np.zeros((3, 8, 8), np.uint8)}, "3 masks for 2 images"),
        ({"mask_classes": None}, "mask_classes"),
        ({"m_train": None}, "no 'x_train' and 'm_train'"),
        ({"spacing": np.array([0.5, -1.0])}, "pixel size in mm"),
    ],
)
def test_a_wrong_mask_is_one_line_naming_the_fix(tmp_path, arrays, words):
    with pytest.raises(DataError, match=words) as info:
        open_segmentation(_npz(tmp_path, **arrays), "train")
    assert "\n" not in str(info.value)


def test_folder_masks_match_images_by_stem_with_dicom_spacing(tmp_path):
    root = tmp_path / "set"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for patient in ("a", "b"):
            (root / split / "images" / patient).mkdir(parents=True)
            (root / split / "masks" / patient).mkdir(parents=True)
            image = rng.integers(0, 255, (12, 16), dtype=np.uint8)
            mask = (image > 128).astype(np.uint8) * 2
            Image.fromarray(image).save(root / split / "images" / patient / "x1.png")
            Image.fromarray(mask).save(root / split / "masks" / patient / "x1.png")
    (root / "classes.txt").write_text("background\nvessel\nlesion\n")
    # a DICOM image (pydicom's own CT slice) with a mask of its size: its Pixel Spacing comes along
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.save_as(root / "train" / "images" / "b" / "ct.dcm")
    ct_mask = np.zeros((ct.Rows, ct.Columns), np.uint8)
    ct_mask[10:20, 5:9] = 1
    Image.fromarray(ct_mask).save(root / "train" / "masks" / "b" / "ct.png")
    train = open_segmentation(str(root), "train")
    assert train.classes == ["background", "vessel", "lesion"]
    assert [f.split("images/")[1] for f in train.files] == ["a/x1.png", "b/ct.dcm", "b/x1.png"]
    assert list(train.groups) == ["a", "b", "b"]
    image, mask = train[1]
    assert mask.shape == image.shape[1:] == (ct.Rows, ct.Columns)
    assert np.array_equal(mask.numpy(), ct_mask)
    assert train.spacing[1] == tuple(float(v) for v in ct.PixelSpacing) and train.spacing[0] is None
    assert not train.spacing_known
    image, mask = train[0]
    assert np.array_equal(mask.numpy() == 2, image[0].numpy() > 128)


def test_a_folder_image_without_its_mask_is_named(tmp_path):
    root = tmp_path / "set"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "images" / "lonely.png")
    with pytest.raises(DataError, match=r"lonely\.png has no mask"):
        open_segmentation(str(root), "train")


def test_data_without_masks_says_where_masks_go(tiny_npz):
    with pytest.raises(DataError, match="m_train"):
        open_segmentation(str(tiny_npz), "train")


def _nifti_pair(tmp_path, affine):
    """An image volume whose bright voxels are class 1 and brightest class 2, and its
    label volume on the same grid (written in the given, non-canonical orientation)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 100, (12, 10, 6)).astype(np.float32)
    labels = (image > 50).astype(np.uint8) + (image > 80).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "ct_labels.nii.gz")
    return image, labels


@pytest.mark.parametrize("square", [False, True])
def test_nifti_labels_are_cut_with_their_image_volume(tmp_path, square):
    # LPS-like axes and anisotropic voxels: the reader reorients both to RAS and cuts
    # the same slice; the mask must mark exactly the image's bright pixels.
    affine = np.diag([-0.8, -1.6, 2.5, 1.0])
    affine[:3, 3] = [10, 20, -5]
    _nifti_pair(tmp_path, affine)
    (tmp_path / "classes.txt").write_text("background\nbright\nbrightest\n")
    table = tmp_path / "seg.csv"
    table.write_text("path,slice,mask,group,split\n" + "".join(
        f"ct.nii.gz,{s},ct_labels.nii.gz,p{s % 2},train\n" for s in (1, 3, 4)))  # fmt: skip
    from selfsup.data.pixels import Reading

    reading = Reading(window="50,100", square_pixels=square)  # centre 50, width 100
    train = open_segmentation(str(table), "train", reading=reading)
    assert train.classes == ["background", "bright", "brightest"]
    assert list(train.groups) == ["p1", "p1", "p0"]
    for i in range(3):
        image, mask = train[i]
        assert mask.shape == image.shape[1:]
        shown = image[0].numpy() * 100  # the window 0..100 maps to 0..1
        if not square:  # resampled images blend voxels; the mask's classes stay whole
            assert np.array_equal(mask.numpy(), (shown > 50).astype(int) + (shown > 80))
        assert set(np.unique(mask.numpy())) <= {0, 1, 2}
    # axial: rows run along A (1.6 mm), columns along R (0.8 mm); square pixels: 0.8 both
    assert train.spacing[0] == pytest.approx((0.8, 0.8) if square else (1.6, 0.8))
    assert tuple(train[0][1].shape) == ((20, 12) if square else (10, 12))


def test_a_label_volume_off_its_images_grid_is_one_line(tmp_path):
    import nibabel as nib

    _nifti_pair(tmp_path, np.eye(4))
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 5), np.uint8), np.eye(4)), tmp_path / "other.nii.gz")
    table = tmp_path / "seg.csv"
    table.write_text("path,slice,mask\nct.nii.gz,2,other.nii.gz\n")
    with pytest.raises(DataError, match="not on its image's grid"):
        open_segmentation(str(table), "train")


def test_manifest_png_masks_with_a_spacing_column(tmp_path):
    for name in ("a", "b"):
        image = np.full((6, 9), 40, np.uint8)
        image[1:4, 2:6] = 200
        Image.fromarray(image).save(tmp_path / f"{name}.png")
        Image.fromarray((image > 100).astype(np.uint8)).save(tmp_path / f"{name}_mask.png")
    table = tmp_path / "seg.csv"
    table.write_text("path,mask,spacing,split\na.png,a_mask.png,0.5x0.25,test\n"
                     "b.png,b_mask.png,,test\n")  # fmt: skip
    test = open_segmentation(str(table), "test")
    assert test.spacing == [(0.5, 0.25), None]
    assert test.classes == ["background", "1"]
    assert np.array_equal(test[0][1].numpy(), test[0][0][0].numpy() > 100)
    table.write_text("path,mask,split\na.png,a_mask.png,test\na.png,,test\n")
    with pytest.raises(DataError, match="row 3: no mask"):
        open_segmentation(str(table), "test")


def _write_seg(source: pydicom.Dataset, labels: np.ndarray, path) -> None:
    """A DICOM SEG of ``labels`` (1: lesion, 2: vessel) drawn on ``source``, by highdicom."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for k, name in ((1, "lesion"), (2, "vessel"))
    ]  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="selfsup tests",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(path)


def test_a_dicom_seg_is_matched_to_the_image_it_references(tmp_path):
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    labels = np.zeros((ct.Rows, ct.Columns), np.uint8)
    labels[20:40, 10:30] = 1
    labels[50:55, 40:60] = 2
    root = tmp_path / "set"
    for split in ("train",):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    ct.save_as(root / "train" / "images" / "slice.dcm")
    # the SEG has a name of its own: it is matched by the UID it references, not the stem
    _write_seg(ct, labels, root / "train" / "masks" / "annotation.dcm")
    train = open_segmentation(str(root), "train")
    assert train.classes == ["background", "lesion", "vessel"]
    image, mask = train[0]
    assert np.array_equal(mask.numpy(), labels) and mask.shape == image.shape[1:]
    assert train.spacing[0] == tuple(float(v) for v in ct.PixelSpacing)
    # the same SEG named in a manifest's mask column
    table = tmp_path / "seg.csv"
    table.write_text("path,mask\nset/train/images/slice.dcm,set/train/masks/annotation.dcm\n")
    again = open_segmentation(str(table), "train")
    assert np.array_equal(again[0][1].numpy(), labels) and again.classes == train.classes
    other = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.save_as(tmp_path / "other.dcm")
    table.write_text("path,mask\nother.dcm,set/train/masks/annotation.dcm\n")
    with pytest.raises(DataError, match=r"does not reference other\.dcm"):
        open_segmentation(str(table), "train")
