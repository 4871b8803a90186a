"""DICOM files read with pydicom, as radiology displays them.

Monochrome pixels go through the modality LUT (RescaleSlope/Intercept or a Modality
LUT Sequence: CT in Hounsfield units), then a window (:class:`~selfsup.data.pixels.
Reading`): the file's own VOI LUT or WindowCenter/Width by default, a given
``center,width`` or CT preset, or the percentile policy; files without a window of
their own follow the intensity policy (``dtype``: the stored bit depth's range after
the modality LUT). MONOCHROME1 (where 0 is white) is inverted, so bright is dense
everywhere. RGB and YBR files come as RGB (pydicom converts YBR), palette colour
through its lookup table. Each frame of a multi-frame file is an image
(``frames: all``), or only the middle one (``frames: middle``). Every image is a
float32 ``(C, H, W)`` tensor in [0, 1].

pydicom decodes compressed transfer syntaxes with the installed plugins (pylibjpeg
with libjpeg and openjpeg: JPEG baseline/extended/lossless, JPEG 2000, RLE); a syntax
no plugin decodes raises :class:`DicomUnreadable` naming the syntax, which the
datasets report like a broken file. Objects without images (RTSTRUCT, SR, SEG,
presentation states, ...) raise :class:`NotAnImage` and are skipped and counted. Files
written without the preamble and file meta group (old scanners, PACS exports) read
too: their transfer syntax is the one the data set is encoded in.

Own code: only the normalisation of a window's output to [0, 1]; pydicom's
``apply_windowing`` / ``apply_voi`` return values in the output range the standard
defines for the file (PS3.3 C.11.2), which :func:`window_range` restates.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.data.pixels import Reading

#: Suffixes of DICOM files; files without a suffix are tried as DICOM too.
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
#: Modalities whose objects are not images to learn from, even where they carry
#: pixel data (a segmentation's masks, a dose grid).
NON_IMAGE_MODALITIES = {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE_PLAN", "SEG",
                        "SR", "PR", "KO", "REG", "DOC", "PLAN", "FID"}  # fmt: skip


class DicomUnreadable(ValueError):
    """A DICOM file whose pixels cannot be read (damaged, or a transfer syntax that no
    installed decoder handles); datasets skip it like a broken image."""


class NotAnImage(Exception):
    """A DICOM object without an image (RTSTRUCT, SR, SEG, ...): skipped and counted."""


def could_be_dicom(path: Path) -> bool:
    """A DICOM suffix, no suffix at all, or the ``DICM`` marker after the preamble."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or (suffix == "" and path.is_file()):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_header(path: str | Path) -> Any:
    """The dataset without its pixel values (deferred): frame count, modality, window.
    Files without the 128-byte preamble or without a file meta group read too
    (``force``; see :func:`complete_for_decoding` for what such a file lacks)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), force=True, defer_size="1 KB")
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as e:
        raise DicomUnreadable(f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if len(ds) == 0:  # pydicom drops every element read so far when the file ends early
        raise DicomUnreadable("no data set elements read: the file is truncated or not DICOM")
    complete_for_decoding(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        meta = getattr(ds, "file_meta", None)
        sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
        if sop is None and "Modality" not in ds:
            raise DicomUnreadable("not a DICOM file (no DICOM elements found)")
        what = ds.get("Modality") or getattr(sop, "name", "object")
        raise NotAnImage(f"{what} without pixel data")
    modality = str(ds.get("Modality", "")).upper()
    if modality in NON_IMAGE_MODALITIES:
        raise NotAnImage(f"{modality} object, not an image")
    return ds


def complete_for_decoding(ds: Any) -> None:
    """Fill in, in place, what pydicom's pixel decoding needs and a headless file lacks.

    Old scanners and PACS exports write the data set alone: no preamble and no file
    meta group, so no Transfer Syntax UID, without which pydicom refuses to decode the
    pixels. Such a file can only be uncompressed (an encapsulated syntax cannot be told
    from the bytes), and pydicom's forced read has already found how the elements were
    encoded (``original_encoding``: implicit VR or not, little endian or not), which
    names the syntax. A missing Photometric Interpretation with one sample per pixel is
    MONOCHROME2, the reading the standard gives such images (ACR-NEMA files lack it)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        syntax = {
            (True, True): ImplicitVRLittleEndian,
            (False, True): ExplicitVRLittleEndian,
            (False, False): ExplicitVRBigEndian,
        }.get(tuple(ds.original_encoding))  # implicit big endian is no syntax: left unset
        if syntax is not None:
            if meta is None:
                ds.file_meta = meta = FileMetaDataset()
            meta.TransferSyntaxUID = syntax
    if "PhotometricInterpretation" not in ds and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        ds.PhotometricInterpretation = "MONOCHROME2"


def frame_count(ds: Any) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def frames_to_read(ds: Any, reading: Reading) -> list[int]:
    n = frame_count(ds)
    return [n // 2] if reading.frames == "middle" else list(range(n))


def read_dicom_frame(path: str | Path, frame: int, reading: Reading) -> torch.Tensor:
    """Frame ``frame`` of a DICOM file as a float32 ``(C, H, W)`` tensor in [0, 1]."""
    ds = read_header(path)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises RuntimeError, NotImplementedError, ValueError ...
        syntax = _transfer_syntax(ds)
        raise DicomUnreadable(
            f"pixel data not decoded ({syntax}): {str(e).splitlines()[0][:150]}"
        ) from None
    if frame_count(ds) > 1:
        arr = arr[frame]
    return pixels_to_unit(arr, ds, reading)


def pixels_to_unit(arr: np.ndarray, ds: Any, reading: Reading) -> torch.Tensor:
    """One frame's stored values ``(H, W)`` or ``(H, W, 3)`` -> ``(C, H, W)`` in [0, 1]."""
    from pydicom.pixels import apply_color_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds).astype(np.float32)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_tensor(rgb / (2.0 ** (16 if bits > 8 else 8) - 1))
    if arr.ndim == 3:  # RGB (pydicom already converted YBR to RGB)
        bits = int(ds.get("BitsStored", 8))
        return _to_tensor(arr.astype(np.float32) / (2.0**bits - 1))
    x = window(arr, ds, reading)
    if photometric == "MONOCHROME1":
        x = 1.0 - x
    return _to_tensor(x[:, :, None])


def window(arr: np.ndarray, ds: Any, reading: Reading) -> np.ndarray:
    """Monochrome stored values -> [0, 1]: modality LUT, then the window (module doc)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

    values = apply_modality_lut(arr, ds).astype(np.float64)
    chosen = reading.window_values()
    has_own = "VOILUTSequence" in ds or "WindowCenter" in ds
    if chosen is None and has_own:
        out, (lo, hi) = apply_voi_lut(values, ds), window_range(ds)
    elif isinstance(chosen, tuple):
        given = copy.copy(ds)
        given.WindowCenter, given.WindowWidth = chosen
        given.VOILUTFunction = "LINEAR"
        if "VOILUTSequence" in given:
            del given["VOILUTSequence"]
        out, (lo, hi) = apply_windowing(values, given), window_range(given)
    elif chosen == "percentile" or reading.intensity == "percentile":
        out = values
        lo, hi = np.percentile(values, (0.5, 99.5))
    else:  # the stored bit depth's range, through the modality LUT
        out, (lo, hi) = values, stored_range(ds)
    return np.clip((out - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def stored_range(ds: Any) -> tuple[float, float]:
    """The range stored values can take (BitsStored, signed or not), after the rescale."""
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, 2.0**bits - 1
    else:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    slope, intercept = (
        float(ds.get("RescaleSlope", 1) or 1),
        float(ds.get("RescaleIntercept", 0) or 0),
    )
    return tuple(sorted((lo * slope + intercept, hi * slope + intercept)))  # type: ignore[return-value]


def window_range(ds: Any) -> tuple[float, float]:
    """The output range of pydicom's VOI LUT / windowing for ``ds`` (PS3.3 C.11.2): a VOI
    LUT Sequence gives [0, 2^n - 1] (n from its LUT Descriptor); a window gives the
    modality LUT's output range (a Modality LUT Sequence's [0, 2^n - 1], else the stored
    range through the rescale)."""
    if ds.get("VOILUTSequence"):  # apply_voi_lut prefers the LUT to a window
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, 2.0**bits - 1
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, 2.0**bits - 1
    return stored_range(ds)


def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return f"transfer syntax {uid.name}" if uid is not None else "no transfer syntax given"


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.clip(x, 0, 1).transpose(2, 0, 1), np.float32))
