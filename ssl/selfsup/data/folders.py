"""Image files on disk: labelled class folders or an unlabelled tree, with broken files skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.pixels import (
    IMAGE_EXTENSIONS,
    UNREADABLE,
    DataError,
    Intensity,
    match_channels,
    read_image,
)


class ImageFolderDataset(Dataset):
    """Image files on disk: labelled ``<root>/<class>/*`` or unlabelled (any files under root).

    A file that cannot be read (corrupt, truncated, empty, not an image) is replaced by
    the next readable one, so batches keep their size (gathered batches must match
    across processes) and one bad file never stops a run; :meth:`skipped` lists them
    (flags in shared memory, so DataLoader workers' findings reach the main process).
    ``strict=True`` makes :meth:`scan` (called before training) fail with every bad
    file instead. Unusual modes are converted, not skipped: CMYK, palette and RGBA
    become RGB, 16-bit follows the intensity policy, gray stays one channel.
    """

    def __init__(
        self, root: str | Path, labelled: bool, intensity: Intensity = "dtype", strict: bool = False
    ) -> None:
        root = Path(root)
        self.intensity = intensity
        self.strict = strict
        self.source = str(root)
        if labelled:
            self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
            self.files, labels = [], []
            for label, cls in enumerate(self.classes):
                for f in sorted((root / cls).rglob("*")):
                    if f.suffix.lower() in IMAGE_EXTENSIONS:
                        self.files.append(f)
                        labels.append(label)
            self.labels: np.ndarray | None = np.asarray(labels, dtype=np.int64)
        else:
            self.classes = []
            self.files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            self.labels = None
        if not self.files:
            raise DataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}.")
        self.bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()
        first, _ = self._readable(0)
        self.channels = first.shape[0]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def targets(self) -> np.ndarray | None:
        return self.labels

    def _read(self, index: int) -> torch.Tensor:
        return read_image(self.files[index], self.intensity)

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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label, _ = self.read_item(index)
        return image, label

    def read_item(self, index: int) -> tuple[torch.Tensor, int, int]:
        """``(image, label, source)``: ``source`` is the index actually read, ``index``
        itself unless that file is unreadable (then the next readable one's; evaluation
        uses it to drop the stand-ins rather than count an image twice)."""
        image, i = self._readable(index)
        label = -1 if self.labels is None else int(self.labels[i])
        return match_channels(image, self.channels), label, i

    def skipped(self) -> list[str]:
        """The files found unreadable so far (by any worker)."""
        return [str(self.files[i]) for i in self.bad.nonzero().flatten().tolist()]

    def scan(self) -> None:
        """Read every file; raise a DataError listing all unreadable ones."""
        broken = []
        for i, f in enumerate(self.files):
            try:
                self._read(i)
            except UNREADABLE as e:
                broken.append(f"{f} ({type(e).__name__}: {e})")
        if broken:
            listing = "\n  ".join(broken)
            raise DataError(
                f"{len(broken)} of {len(self.files)} files under {self.source} cannot be read "
                f"(data.strict is on):\n  {listing}\nRemove or replace them, or drop "
                "--data.strict to skip them."
            )
