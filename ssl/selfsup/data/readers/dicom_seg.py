"""DICOM Segmentation objects (SEG, the standard's masks), read through highdicom.

A SEG stores one binary (or fractional) frame per segment and source frame, and names
in its per-frame functional groups the source images it was drawn on (SOP Instance UID,
frame). :class:`SegIndex` finds the SEG objects of a folder or manifest and which source
images each covers; :meth:`SegIndex.mask_for` gives one source image's (frame's) label
map, segment number ``k`` as class ``k``, 0 where no segment is (highdicom's
``combine_segments``; overlapping segments are refused, as a label map cannot hold them).
Fractional segments are thresholded at 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.pixels import DataError

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def is_seg(path: Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation object (read without its pixels)."""
    import pydicom

    from selfsup.data.readers.dicom import could_be_dicom

    if not could_be_dicom(path):
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM after all: not a SEG either
        return False
    return str(getattr(header, "SOPClassUID", "")) == SEG_SOP_CLASS


class SegIndex:
    """The SEG objects among ``files``, by the SOP Instance UIDs of the images they cover."""

    def __init__(self, files: list[Path]) -> None:
        import highdicom as hd

        self.by_source: dict[str, Path] = {}
        self.files: set[Path] = set()
        self.segments: dict[int, str] = {}
        self._open: dict[Path, object] = {}
        for f in files:
            if not is_seg(f):
                continue
            seg = hd.seg.segread(f)
            self._open[f] = seg
            self.files.add(f)
            for _, _, sop_uid in seg.get_source_image_uids():
                self.by_source[str(sop_uid)] = f
            for n in seg.segment_numbers:
                self.segments.setdefault(int(n), str(seg.get_segment_description(n).segment_label))

    def __bool__(self) -> bool:
        return bool(self._open)

    def classes(self) -> list[str]:
        """Background, then the segments' labels by segment number (unnamed numbers: the
        number)."""
        top = max(self.segments, default=1)
        return ["background", *[self.segments.get(k, str(k)) for k in range(1, top + 1)]]

    def mask_for(self, image: Path, frame: int | None) -> np.ndarray | None:
        """The label map drawn on ``image`` (its ``frame``, 0-based, for a multi-frame
        file), or None when no SEG here covers it."""
        from selfsup.data.readers.dicom import read_header

        header = read_header(image)
        uid = str(getattr(header, "SOPInstanceUID", ""))
        if int(getattr(header, "NumberOfFrames", 1) or 1) == 1:
            frame = None  # a single-frame image is referenced as a whole instance
        path = self.by_source.get(uid)
        if path is None:
            return None
        seg = self._open[path]
        try:
            if frame is None:
                pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True)
            else:
                pixels = seg.get_pixels_by_source_frame(uid, [frame + 1], combine_segments=True)
        except (ValueError, RuntimeError) as e:
            raise DataError(f"{path}: cannot give a label map of {image} ({e}).") from None
        return np.asarray(pixels[0]).astype(np.int64)
