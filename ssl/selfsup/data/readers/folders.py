"""Image files on disk — PNG/JPEG/TIFF/... and DICOM (every frame an image) — as labelled
class folders or an unlabelled tree, with broken files skipped and non-image DICOM
objects counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.labels import Labelled
from selfsup.data.pixels import (
    IMAGE_EXTENSIONS,
    UNREADABLE,
    DataError,
    Intensity,
    Reading,
    read_image,
)
from selfsup.data.readers.dicom import (
    DicomUnreadable,
    NotAnImage,
    could_be_dicom,
    frames_to_read,
    read_dicom_frame,
    read_header,
)
from selfsup.transforms import match_channels

#: Files a tree may hold beside its images, never tried as images.
IGNORED_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".yaml", ".yml", ".md", ".xml", ".html",
                    ".pdf", ".zip", ".gz", ".nii", ".mgz", ".npz", ".npy", ".pt", ".ckpt")  # fmt: skip


def list_images(root: Path) -> list[Path]:
    """Image and DICOM files under ``root`` (any depth), sorted; hidden files left out."""
    found = []
    for f in sorted(root.rglob("*")):
        if f.name.startswith(".") or not f.is_file():
            continue
        suffix = f.suffix.lower()
        if suffix in IMAGE_EXTENSIONS or (suffix not in IGNORED_SUFFIXES and could_be_dicom(f)):
            found.append(f)
    return found


class ImageFiles(Labelled, Dataset):
    """Images read from files, one entry per image: its file, its frame (a DICOM frame,
    or a volume's slice; None for a plain image file), its label (-1: none; a ``(K,)``
    tensor of 0/1 findings for multi-label data, see :mod:`selfsup.data.labels`) and
    its group (``groups``: None unless the source names patients or studies).

    A file that cannot be read (corrupt, truncated, empty, not an image, a transfer
    syntax nothing decodes) is replaced by the next readable one, so batches keep their
    size (gathered batches must match across processes) and one bad file never stops a
    run; :meth:`skipped` lists them (flags in shared memory, so DataLoader workers'
    findings reach the main process). ``strict=True`` makes :meth:`scan` (called before
    training) fail with every bad file instead. Unusual modes are converted, not
    skipped: CMYK, palette and RGBA become RGB, 16-bit follows the intensity policy,
    gray stays one channel. Subclasses fill the entries and call :meth:`_finish`.
    """

    files: list[Path]
    frames: list[int | None]
    labels: np.ndarray | None
    classes: list[str]
    not_images: list[str]
    source: str

    def __init__(self, reading: Reading, strict: bool = False) -> None:
        self.reading, self.intensity, self.strict = reading, reading.intensity, strict
        self.files, self.frames, self.not_images = [], [], []

    def add_file(self, f: Path, frame: int | None = None) -> int:
        """Entries for ``f``: one for an image file or a given frame/slice, one per frame
        read of a DICOM file; a DICOM object without an image adds none (listed in
        :attr:`not_images`), an unreadable one a single entry marked bad."""
        frames: list[int | None] = [frame]
        self._broken = getattr(self, "_broken", [])
        if frame is None and f.suffix.lower() not in IMAGE_EXTENSIONS:
            try:
                frames = list(frames_to_read(read_header(f), self.reading))
            except NotAnImage as e:
                self.not_images.append(f"{f} ({e})")
                return 0
            except DicomUnreadable:
                self._broken.append(len(self.files))  # listed as skipped from the start
                frames = [0]
        self.files += [f] * len(frames)
        self.frames += frames
        return len(frames)

    def _finish(self, what: str) -> None:
        if not self.files:
            others = (
                f" ({len(self.not_images)} DICOM objects without images)" if self.not_images else ""
            )
            raise DataError(f"No images found in {what}{others}.")
        self.bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()
        self.bad[getattr(self, "_broken", [])] = True
        first, _ = self._readable(0)
        self.channels = first.shape[0]

    def summary(self) -> dict[str, object]:
        """What the files hold: readable images (so far), DICOM files and frames, and how
        many files are skipped. A file found unreadable counts as that alone, with every
        frame of it: its frames are one decode, so one that fails says the rest will, and
        the counts then agree with :meth:`skipped`."""
        broken = set(self.skipped())
        good = [(f, frame) for f, frame in zip(self.files, self.frames, strict=True)
                if str(f) not in broken]  # fmt: skip
        dicom = [f for f, frame in good if frame is not None]
        return {
            "images": len(good),
            "files": len({f for f, _ in good}),
            "dicom_files": len(set(dicom)),
            "dicom_frames": len(dicom),
            "not_images": len(self.not_images),
            "unreadable": len(self.skipped()),
        }

    def __len__(self) -> int:
        return len(self.files)

    @property
    def targets(self) -> np.ndarray | None:
        return self.labels

    def _read(self, index: int) -> torch.Tensor:
        f, frame = self.files[index], self.frames[index]
        if frame is None:
            return read_image(f, self.intensity)
        from selfsup.data.readers.volumes import is_volume, read_volume_slice

        if is_volume(f):
            return read_volume_slice(f, frame, self.reading)
        return read_dicom_frame(f, frame, self.reading)

    def _readable(self, index: int) -> tuple[torch.Tensor, int]:
        """The image at ``index``, or at the next index whose file reads."""
        n = len(self.files)
        for step in range(n):
            i = (index + step) % n
            if self.bad[i]:
                continue
            try:
                return self._read(i), i
            except UNREADABLE:
                self.bad[i] = True
        raise DataError(
            f"None of the {n} image files under {self.source} can be read (corrupt, empty or "
            "not images): replace them with readable images."
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        image, label, _ = self.read_item(index)
        return image, label

    def read_item(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor, int]:
        """``(image, label, source)``: ``source`` is the index actually read, ``index``
        itself unless that file is unreadable (then the next readable one's; evaluation
        uses it to drop the stand-ins rather than count an image twice)."""
        image, i = self._readable(index)
        return match_channels(image, self.channels), self.label_at(i), i

    def skipped(self) -> list[str]:
        """The files found unreadable so far (by any worker)."""
        bad = self.bad.nonzero().flatten().tolist()
        return list(dict.fromkeys(str(self.files[i]) for i in bad))

    def why_unreadable(self, files: list[str]) -> list[str]:
        """``FILE (reason)`` for each of ``files`` (paths :meth:`skipped` gave, on any
        process): read once more here, which costs only the few skipped files."""
        first = {str(f): i for i, f in reversed(list(enumerate(self.files)))}
        out = []
        for f in files:
            try:
                self._read(first[f])
                reason = "read on a second try"
            except UNREADABLE as e:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            except KeyError:
                reason = "not in this data set"
            out.append(f"{f} ({reason})")
        return out

    def scan(self) -> None:
        """Read every file once; raise a DataError listing all unreadable ones (and the
        DICOM objects without images, which are skipped either way)."""
        broken, seen = [], set()
        for i, f in enumerate(self.files):
            if f in seen:
                continue
            seen.add(f)
            try:
                self._read(i)
            except UNREADABLE as e:
                broken.append(f"{f} ({type(e).__name__}: {e})")
        if broken:
            listing = "\n  ".join(broken)
            others = "".join(f"\n  skipped, not an image: {x}" for x in self.not_images)
            raise DataError(
                f"{len(broken)} of {len(seen)} files under {self.source} cannot be read "
                f"(data.strict is on):\n  {listing}{others}\nRemove or replace them, or drop "
                "--data.strict to skip them."
            )


class ImageFolderDataset(ImageFiles):
    """Image and DICOM files on disk: labelled ``<root>/<class>/*`` or unlabelled (any
    files under root)."""

    def __init__(
        self,
        root: str | Path,
        labelled: bool,
        intensity: Intensity = "dtype",
        strict: bool = False,
        reading: Reading | None = None,
    ) -> None:
        super().__init__(reading or Reading(intensity=intensity), strict)
        root = Path(root)
        self.source = str(root)
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if labelled else []
        folders = [(root / c, i) for i, c in enumerate(self.classes)] if labelled else [(root, -1)]
        labels: list[int] = []
        for folder, label in folders:
            for f in list_images(folder):
                labels += [label] * self.add_file(f)
        self.labels = np.asarray(labels, np.int64) if labelled else None
        self._finish(f"{root} ({', '.join(IMAGE_EXTENSIONS)} or DICOM files)")
