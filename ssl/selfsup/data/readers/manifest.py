"""CSV/TSV manifests: one row per image, the way a study's data manager hands data over.

Columns (a header row names them; order free):

- ``path`` (required): the file, relative to the table's folder (or absolute): a PNG/
  JPEG/TIFF, a DICOM file (``frame`` picks one frame of a multi-frame file; without it
  every frame is an image, as ``data.frames`` says), or a volume (NIfTI) with its
  ``slice`` along ``data.slice_axis`` (required for volumes: a manifest names images);
- ``label``: a class index or name (names become indices in sorted order); rows of a
  labelled table must all have one;
- ``labels`` (instead of ``label``): several findings per image, separated by ``|``
  (``effusion|nodule``; ``none`` for an image without findings): multi-label, one
  column per finding named anywhere in the table, sorted; or, instead, the 0/1 columns
  that ``Reading.label_columns`` names (see :func:`~selfsup.data.labels.manifest_labels`);
- ``group``: the patient or study a row belongs to (kept for group-aware splits);
- ``split``: ``train``, ``val`` or ``test``; without the column every row is training data.

Other columns are kept (:attr:`ManifestDataset.columns`) and not read here. Missing files
stop before training with their row numbers; unreadable files are skipped like broken
images (:class:`~selfsup.data.readers.folders.ImageFiles`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from selfsup.data.labels import manifest_labels, refuse_rows
from selfsup.data.pixels import DataError, Reading
from selfsup.data.readers.folders import ImageFiles

MANIFEST_SUFFIXES = (".csv", ".tsv")
SPLITS = ("train", "val", "test")


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows (each with its 1-based line number under ``"#row"``)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            rows = [{**r, "#row": str(i)} for i, r in enumerate(reader, start=2)]
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read the manifest {path} ({e}).") from None
    if "path" not in header:
        raise DataError(
            f"{path} has columns {header} but no 'path' column: a manifest names each image's "
            "file in a column called path (optional: label, group, split, slice, frame)."
        )
    rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in rows]
    return header, rows


class ManifestDataset(ImageFiles):
    """The rows of a manifest's ``split`` as images (see the module doc).

    Attributes: ``labels`` (``(N,)`` class indices, ``(N, K)`` 0/1 findings, or None for
    an unlabelled table), ``classes`` (class or finding names), ``groups`` (str per
    image, or None), ``rows`` (the table's line number per image), ``columns`` (every
    column of the table).
    """

    def __init__(
        self, path: str | Path, split: str, reading: Reading | None = None, strict: bool = False
    ) -> None:
        from selfsup.data.readers.volumes import is_volume

        super().__init__(reading or Reading(), strict)
        path = Path(path)
        self.source = str(path)
        self.columns, table = read_table(path)
        if "split" in self.columns:
            unknown = sorted({r["split"] for r in table} - set(SPLITS))
            if unknown:
                raise DataError(f"{path}: split values {unknown}; use {', '.join(SPLITS)}.")
            chosen = [r for r in table if r["split"] == split]
        else:
            chosen = table if split == "train" else []
        if not chosen:
            where = (
                "no split column (every row is training data)"
                if "split" not in self.columns
                else f"no rows with split {split}"
            )
            raise DataError(f"{path} has {where}: give rows with split {split}.")
        root = path.parent
        missing, volumes_without_slice = [], []
        for r in chosen:
            f = Path(r["path"]) if Path(r["path"]).is_absolute() else root / r["path"]
            r["#file"] = str(f)
            if not r["path"] or not f.is_file():
                missing.append(r)
            elif is_volume(f) and not r.get("slice"):
                volumes_without_slice.append(r)
        refuse_rows(
            path, missing, "files missing", "fix the paths (relative to the table) or drop the rows"
        )
        refuse_rows(path, volumes_without_slice, "volumes without a slice",
                "give the slice column, or point DATA at the folder of volumes")  # fmt: skip
        refuse_rows(path, [r for r in chosen if not _is_index(r.get("slice", "") or r.get("frame", ""))],
                "a slice or frame that is not a whole number", "give 0, 1, 2, ... or leave it empty")  # fmt: skip
        labels, self.classes = manifest_labels(
            path, self.columns, table, chosen, self.reading.label_columns
        )
        take, groups, rows = [], [], []
        for j, r in enumerate(chosen):
            frame = r.get("slice") or r.get("frame") or None
            n = self.add_file(Path(r["#file"]), int(frame) if frame else None)
            take += [j] * n  # a multi-frame DICOM file: one entry per frame, one row's label
            groups += [r.get("group", "")] * n
            rows += [int(r["#row"])] * n
        self.labels = None if labels is None else labels[np.asarray(take, np.int64)]
        self.groups = np.asarray(groups) if "group" in self.columns else None
        self.rows = np.asarray(rows, np.int64)
        self._finish(f"{path} (split {split})")


def _is_index(text: str) -> bool:
    return text == "" or text.isdigit()
