"""Volumes (NIfTI, MGH, Analyze) read as 2D or 2.5D slices, through nibabel.

nibabel does the reading: headers (shape, 4D count, spacing) at construction through
its lazy proxy, pixel data (scaled by ``scl_slope``/``scl_inter``) only when a slice of
that volume is needed, and the reorientation (``as_closest_canonical``: RAS+). What
selfsup adds is what nibabel has no notion of: cutting slices for display, the
intensity window, drawing slices per epoch, and a bounded cache of decoded volumes.

Slices are shown in neurological convention (as nilearn and FSLeyes show them), the
patient's left on the image's left: axial (cut along S) has anterior at the top and R+
to the right; coronal (along A) superior at the top, R+ to the right; sagittal (along
R) superior at the top, anterior to the right. So pixel ``[r, c]`` of axial slice
``s`` is ``canonical[c, n_A - 1 - r, s]`` (the canonical array indexed R, A, S).

Intensity, per (3D) volume, to float32 in [0, 1] (clipped): ``reading.window``
``center,width`` or a preset, in the volume's units (HU for CT); ``percentile`` (or
``intensity="percentile"`` without a window): the volume's 0.5-99.5 percentiles;
otherwise the header's display range ``cal_min..cal_max`` where the file sets one,
else the volume's min..max: NIfTI stores floats or ints whose dtype says nothing
about their display range, so the dtype policy of 2D images does not apply.
"""

from __future__ import annotations

import sys
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from torch.utils.data import Dataset

from selfsup.data.labels import Labelled, finding_names
from selfsup.data.pixels import UNREADABLE, DataError, Reading

#: What nibabel reads well as 3D/4D images. An Analyze/NIfTI pair is listed once, by
#: its ``.hdr``; its ``.img`` is read through it (either name opens the pair).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".hdr", ".img")
#: Per slice axis: (the axis cut along, the columns' axis, the rows' axis) of RAS+ arrays.
PLANES = {"sagittal": (0, 1, 2), "coronal": (1, 0, 2), "axial": (2, 0, 1)}
_FLOOR = 0.01  # foreground: above the volume's lowest windowed value by 1% of [0, 1]


class UnreadableVolume(OSError):
    """A volume file nibabel cannot read (an OSError, so callers catching pixels'
    ``UNREADABLE`` treat it like a broken image)."""


_NIBABEL_ERRORS = (*UNREADABLE, ImageFileError, HeaderDataError, zlib.error)


def is_volume(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def list_volumes(root: Path) -> list[Path]:
    """The volume files under ``root``, sorted (a ``.hdr``/``.img`` pair once)."""
    files = [f for f in Path(root).rglob("*") if f.is_file() and is_volume(f)]
    return sorted(
        f for f in files if not (f.suffix.lower() == ".img" and f.with_suffix(".hdr").exists())
    )


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, int, int]  # canonical (R, A, S)
    spacing: tuple[float, float, float]  # mm, canonical order
    volumes: int  # 3D volumes in the file (1 for 3D)
    dtype: str


@dataclass(frozen=True)
class _Volume:
    slices: np.ndarray  # (N, H, W) float32 in [0, 1], display orientation
    foreground: np.ndarray  # (N,) share of each slice's pixels above the floor


def load_volume(path: Path):
    try:
        img = nib.load(path)
    except _NIBABEL_ERRORS as e:
        raise UnreadableVolume(f"{type(e).__name__}: {e}") from None
    if getattr(img, "affine", None) is None or len(img.shape) < 3:
        raise UnreadableVolume(f"not a volume ({type(img).__name__}, shape {img.shape})")
    missing = [fm.filename for fm in img.file_map.values() if fm.filename and not
               Path(fm.filename).exists() and not fm.filename.endswith(".mat")]  # fmt: skip
    if missing:  # a .hdr without its .img
        raise UnreadableVolume(f"missing {', '.join(missing)}")
    return img


def read_volume_header(path: Path) -> _Header:
    img = load_volume(path)
    ornt = nib.io_orientation(img.affine)
    shape, zooms = [0, 0, 0], [0.0, 0.0, 0.0]
    for i, (axis, _) in enumerate(ornt):
        shape[int(axis)], zooms[int(axis)] = img.shape[i], float(img.header.get_zooms()[i])
    n = int(np.prod(img.shape[3:]))
    return _Header(tuple(shape), tuple(zooms), n, img.get_data_dtype().name)


def _intensity_range(data: np.ndarray, reading: Reading, header) -> tuple[float, float]:
    window = reading.window_values()
    if isinstance(window, tuple):
        center, width = window
        return center - width / 2, center + width / 2
    if window == "percentile" or reading.intensity == "percentile":
        lo, hi = np.percentile(data, (0.5, 99.5))
        return float(lo), float(hi)
    if "cal_max" in header and header["cal_max"] > header["cal_min"]:
        return float(header["cal_min"]), float(header["cal_max"])
    return float(data.min()), float(data.max())


def _data(img, index: tuple = ()) -> np.ndarray:
    """The (scaled) voxels, float32; of 3D volume ``index`` in a 4D file."""
    try:  # nibabel's proxy reads only what is indexed
        return np.asarray(img.dataobj[(..., *index)] if index else img.dataobj, np.float32)
    except _NIBABEL_ERRORS as e:  # a truncated .nii.gz shows only here
        raise UnreadableVolume(f"{type(e).__name__}: {e}") from None


def _decode(path: Path, volume: int, reading: Reading) -> _Volume:
    """Read, reorient, window and slice one 3D volume (``volume``: index in a 4D file)."""
    img = load_volume(path)
    data = _data(img, np.unravel_index(volume, img.shape[3:]) if len(img.shape) > 3 else ())
    data = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(data, img.affine)).dataobj)
    finite = np.isfinite(data)
    if not finite.all():  # masked float maps store NaN outside the mask
        data = np.where(finite, data, data[finite].min() if finite.any() else 0.0)
    lo, hi = _intensity_range(data, reading, img.header)
    data = np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    a, cols, rows = PLANES[reading.slice_axis]
    slices = np.ascontiguousarray(data.transpose(a, rows, cols)[:, ::-1, :])  # rows top down
    floor = slices.min() + _FLOOR
    return _Volume(slices, (slices > floor).mean(axis=(1, 2)))


class _LRU:
    """At most ``size`` decoded volumes, least recently used dropped first."""

    def __init__(self) -> None:
        self.items: OrderedDict = OrderedDict()

    def get(self, key, size: int, make: Callable[[], _Volume]) -> _Volume:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        if size > 0:
            self.items[key] = value
            while len(self.items) > size:
                self.items.popitem(last=False)
        return value


def _cut(volume: _Volume, s: int, header: _Header, reading: Reading) -> torch.Tensor:
    """Slices ``s - k .. s + k`` (edges repeated) as ``(2k + 1, H, W)``, square if asked."""
    k = reading.slice_context
    n = len(volume.slices)
    x = torch.from_numpy(volume.slices[np.clip(np.arange(s - k, s + k + 1), 0, n - 1)])
    if reading.square_pixels:
        size = slice_shape(header, reading)
        if size != tuple(x.shape[1:]):
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
            x = x.clamp_(0.0, 1.0)
    return x


def slice_shape(header: _Header, reading: Reading) -> tuple[int, int]:
    """``(H, W)`` of a slice; with square pixels, at the finer in-plane spacing."""
    _, cols, rows = PLANES[reading.slice_axis]
    h, dh = header.shape[rows], header.spacing[rows]
    w, dw = header.shape[cols], header.spacing[cols]
    if not reading.square_pixels or dh <= 0 or dw <= 0:
        return h, w
    fine = min(dh, dw)
    return max(1, round(h * dh / fine)), max(1, round(w * dw / fine))


def _count(values) -> dict[str, int]:
    """How many of each value (shapes written ``AxBxC``)."""
    names = ("x".join(map(str, v)) if isinstance(v, tuple) else v for v in values)
    return dict(sorted(Counter(names).items()))


_SLICE_CACHE = _LRU()


def read_volume_slice(path: Path, index: int, reading: Reading, volume: int = 0) -> torch.Tensor:
    """Slice ``index`` of a volume file (of its 3D volume ``volume`` if 4D), as
    ``(2k + 1, H, W)`` float32 in [0, 1]; volumes stay cached per process as in the dataset."""
    header = read_volume_header(Path(path))
    n = header.shape[PLANES[reading.slice_axis][0]]
    if not 0 <= index < n or not 0 <= volume < header.volumes:
        raise DataError(
            f"{path}: slice {index} of volume {volume}: it has {n} {reading.slice_axis} "
            f"slices (0..{n - 1}) and {header.volumes} 3D volume(s); fix the slice column."
        )
    key = (str(path), volume, reading)
    decoded = _SLICE_CACHE.get(key, reading.volume_cache, lambda: _decode(path, volume, reading))
    return _cut(decoded, index, header, reading)


class VolumeSliceDataset(Labelled, Dataset):
    """Random slices of volume files: ``reading.slices_per_volume`` items per 3D volume.

    Item ``i`` belongs to 3D volume ``i // slices_per_volume``; each read draws one of
    its slices with torch's global generator (seeded per sample by the DataModule, so
    draws repeat and resume exactly). Background-only slices (less than
    ``foreground_threshold`` of the pixels above the volume's lowest windowed value,
    plus 1% of the range to ignore noise at the floor) are not drawn: the draw is
    uniform over the slices that pass (as redrawing until one passes would be), or
    the most covered slice if none does. With ``slice_context = k``, channels are slices
    ``s - k .. s + k`` in order, the edge slice repeated past the volume's ends.

    Only headers are read here; a 3D volume is decoded (read, reoriented, windowed)
    when one of its slices is needed, and at most ``reading.volume_cache`` decoded
    volumes stay in memory per process (each DataLoader worker has its own cache).
    4D files give each 3D volume (``volumes_4d="all"``) or the first one. Files that
    cannot be read are skipped and listed as in :class:`ImageFolderDataset`.
    """

    def __init__(
        self,
        files: list[Path],
        reading: Reading,
        labels: np.ndarray | None = None,
        classes: list[str] | None = None,
        source: str = "",
        strict: bool = False,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.reading, self.labels, self.classes = reading, labels, list(classes or [])
        if self.multilabel:  # labels (files, K): 0/1 findings per volume file
            self.classes = finding_names(classes, np.shape(labels)[1], source or "volumes")
        self.source, self.strict = source, strict
        self.channels = 2 * reading.slice_context + 1
        self.bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()
        self.reasons: dict[int, str] = {}
        self.headers: dict[int, _Header] = {}
        where = self._where = f" under {source}" if source else ""
        if labels is not None and len(labels) != len(self.files):
            raise DataError(f"{len(labels)} labels for {len(self.files)} volume files{where}.")
        if not self.files:
            raise DataError(f"No volume files ({', '.join(VOLUME_SUFFIXES)}) found{where}.")
        for i, f in enumerate(self.files):
            try:
                self.headers[i] = read_volume_header(f)
            except UnreadableVolume as e:
                self._mark_bad(i, e)
        if not self.headers:
            raise DataError(
                f"None of the {len(self.files)} volume files{where} can be read (e.g. "
                f"{self.files[0]}: {self.reasons[0]}): give NIfTI (.nii, .nii.gz), MGH or "
                "Analyze volumes that nibabel opens."
            )
        first = reading.volumes_4d == "first"
        self.units = [(i, t) for i, h in self.headers.items()
                      for t in range(1 if first else h.volumes)]  # fmt: skip
        self._cache = _LRU()
        many = [h for h in self.headers.values() if h.volumes > 1]
        if many:
            done = ("only the first 3D volume of each is read" if first else
                    f"each 3D volume is read as a volume, {len(self.units)} in all")  # fmt: skip
            print(f"selfsup: {len(many)} of {len(self.headers)} volume files are 4D: {done} "
                  f"(data.volumes_4d {reading.volumes_4d}).", file=sys.stderr)  # fmt: skip

    def __getstate__(self) -> dict:  # workers start with an empty cache of their own
        return {**self.__dict__, "_cache": _LRU()}

    def __len__(self) -> int:
        return len(self.units) * self.reading.slices_per_volume

    @property
    def targets(self) -> np.ndarray | None:
        if self.labels is None:
            return None
        files = np.asarray([i for i, _ in self.units], dtype=np.int64)
        return np.repeat(np.asarray(self.labels)[files], self.reading.slices_per_volume, axis=0)

    def _mark_bad(self, i: int, error: Exception) -> None:
        self.bad[i] = True
        self.reasons[i] = str(error)

    def _volume(self, unit: int) -> _Volume:
        i, t = self.units[unit]
        return self._cache.get(
            unit, self.reading.volume_cache, lambda: _decode(self.files[i], t, self.reading)
        )

    def _readable(self, unit: int) -> tuple[_Volume, int]:
        """The decoded volume ``unit``, or the next one whose file reads."""
        n = len(self.units)
        for step in range(n):
            u = (unit + step) % n
            if self.bad[self.units[u][0]]:
                continue
            try:
                return self._volume(u), u
            except UnreadableVolume as e:
                self._mark_bad(self.units[u][0], e)
        raise DataError(
            f"None of the {len(self.files)} volume files{self._where} can be read: replace "
            "them with readable volumes."
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        image, label, _ = self.read_item(index)
        return image, label

    def read_item(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor, int]:
        """``(image, label, source)``: ``source`` is ``index`` unless its volume's file
        is unreadable (then the index of the same draw in the volume read instead)."""
        spv = self.reading.slices_per_volume
        volume, u = self._readable(index // spv)
        passing = np.flatnonzero(volume.foreground >= self.reading.foreground_threshold)
        if len(passing):
            s = int(passing[torch.randint(len(passing), ()).item()])
        else:
            s = int(volume.foreground.argmax())
        i = self.units[u][0]
        image = _cut(volume, s, self.headers[i], self.reading)
        return image, self.label_at(i), u * spv + index % spv

    def skipped(self) -> list[str]:
        """The files found unreadable so far (by any worker)."""
        return [str(self.files[i]) for i in self.bad.nonzero().flatten().tolist()]

    def _broken(self) -> list[str]:  # with why (a worker's finding reads "unreadable")
        bad = self.bad.nonzero().flatten().tolist()
        return [f"{self.files[i]} ({self.reasons.get(i, 'unreadable')})" for i in bad]

    def scan(self) -> None:
        """Read every volume's data; raise a DataError listing all unreadable files."""
        for i, f in enumerate(self.files):
            if i in self.headers and not self.bad[i]:
                try:
                    _data(load_volume(f))
                except UnreadableVolume as e:
                    self._mark_bad(i, e)
        broken = self._broken()
        if broken:
            listing = "\n  ".join(broken)
            raise DataError(
                f"{len(broken)} of {len(self.files)} volume files{self._where} "
                f"cannot be read (data.strict is on):\n  {listing}\nRemove or replace them, "
                "or drop --data.strict to skip them."
            )

    def summary(self) -> dict:
        """What will be read: volumes, shapes (canonical R x A x S), spacing, policy."""
        headers = list(self.headers.values())
        spacing = np.asarray([h.spacing for h in headers])
        window = self.reading.window_values()
        if isinstance(window, tuple):
            policy = f"window center {window[0]:g}, width {window[1]:g} (the volumes' units)"
        elif window == "percentile" or self.reading.intensity == "percentile":
            policy = "0.5-99.5 percentile window per volume"
        else:
            policy = "the header's cal_min..cal_max where set, else min..max per volume"
        return {
            "files": len(self.files),
            "volumes": len(headers),
            "volumes_4d": sum(h.volumes > 1 for h in headers),
            "volumes_4d_policy": self.reading.volumes_4d,
            "volumes_3d": len(self.units),
            "slices_per_volume": self.reading.slices_per_volume,
            "items": len(self),
            "shapes": _count(h.shape for h in headers),
            "slice_axis": self.reading.slice_axis,
            "slice_shapes": _count(slice_shape(h, self.reading) for h in headers),
            "channels": self.channels,
            "spacing_mm": {"min": spacing.min(0).tolist(), "max": spacing.max(0).tolist()},
            "dtypes": _count(h.dtype for h in headers),
            "intensity": policy,
            "skipped": self._broken(),
        }
