"""Labels and groups: one class per image, or several findings per image, and the
patient or study each image belongs to.

Every labelled reader keeps ``labels`` in one of two shapes, and :class:`Labelled`
gives them the same face:

- single-label: ``(N,)`` int64 class indices, ``classes`` the class names; an item's
  label is an ``int`` (-1 when the data set is unlabelled);
- multi-label: ``(N, K)`` int64 in {0, 1}, one column per finding, ``classes`` the K
  finding names (``"0".."K-1"`` when the source names none); an item's label is a
  ``(K,)`` int64 tensor, so the default collate gives ``(B, K)``.

``groups`` is None or an ``(N,)`` str array of patient/study ids.

Manifests say their labels in one of three ways (:func:`manifest_labels`): a ``label``
column (a class per row), a ``labels`` column of findings separated by ``|``
(``effusion|nodule``; ``none`` for no finding), or the 0/1 columns named by
``label_columns``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.data.pixels import DataError

#: How a 0/1 finding may be written in a manifest cell (compared in lower case).
PRESENT, ABSENT = ("1", "1.0", "true"), ("0", "0.0", "false")
#: The ``labels`` cell of an image without findings (any case).
NO_FINDING = "none"


class Labelled:
    """What every labelled reader shares: :attr:`multilabel` and an item's label.

    The reader sets ``labels`` (``(N,)``, ``(N, K)`` or None) and may set ``groups``."""

    labels: np.ndarray | None
    groups: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        """Several findings per image: labels are ``(N, K)``."""
        return self.labels is not None and np.ndim(self.labels) == 2

    def label_at(self, i: int) -> int | torch.Tensor:
        """Label ``i`` of :attr:`labels`: an int (-1: unlabelled), or a ``(K,)`` int64 tensor."""
        if self.labels is None:
            return -1
        if self.multilabel:
            return torch.from_numpy(np.array(self.labels[i], dtype=np.int64))
        return int(self.labels[i])


def findings_matrix(y: Any, where: str) -> np.ndarray:
    """An ``(N, K)`` array of 0/1 (int, bool or whole floats) -> int64; other values refused.

    ``where`` starts the message (``"data.npz: y_train"``)."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] == 0:
        raise DataError(f"{where} has shape {y.shape}; give findings as an (N, K) array of 0/1.")
    if y.dtype.kind not in "biuf":
        raise DataError(
            f"{where} has dtype {y.dtype}; save findings as 0/1 ints (or bools), one column each."
        )
    bad = y[(y != 0) & (y != 1)]
    if len(bad):
        raise DataError(
            f"{where} holds values other than 0 and 1 (e.g. {bad[0]!r}) in its {y.shape[1]} "
            "finding columns: a finding is 1 (present) or 0 (absent); map other values, such "
            "as -1 for 'uncertain', to 0 or 1 first."
        )
    return y.astype(np.int64)


def finding_names(names: Sequence[str] | None, k: int, where: str) -> list[str]:
    """The K finding names: ``names`` when given (one per column), else ``"0".."K-1"``."""
    if names is None:
        return [str(i) for i in range(k)]
    names = [str(n) for n in names]
    if len(names) != k:
        raise DataError(
            f"{where}: {len(names)} class names for {k} finding columns; give one name per "
            "column, in the columns' order."
        )
    return names


def as_groups(groups: Any, n: int, where: str) -> np.ndarray:
    """One patient/study id per image (str or int ids) -> an ``(N,)`` str array."""
    g = np.asarray(groups)
    if g.ndim == 2 and g.shape[1] == 1:
        g = g[:, 0]
    if g.dtype.kind not in "USiu":
        raise DataError(f"{where} has dtype {g.dtype}; save group ids as str or int.")
    if g.ndim != 1 or len(g) != n:
        raise DataError(
            f"{where} has shape {g.shape} for {n} images; give one patient/study id per "
            "image, in the images' order."
        )
    return g.astype(str)


# -- manifests ----------------------------------------------------------------------------


def refuse_rows(
    path: Path,
    rows: list[dict[str, str]],
    problem: str,
    fix: str,
    shown: Callable[[dict[str, str]], str] | None = None,
) -> None:
    """One line naming up to five of ``rows`` by line number (and their path, or ``shown``)."""
    if rows:
        show = shown or (lambda r: r["path"] or "empty")
        listed = ", ".join(f"{r['#row']} ({show(r)})" for r in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise DataError(f"{path}: {len(rows)} row(s) with {problem}: lines {listed}{more}; {fix}.")


def manifest_labels(
    path: Path,
    columns: list[str],
    table: list[dict[str, str]],
    chosen: list[dict[str, str]],
    label_columns: Sequence[str] | None,
) -> tuple[np.ndarray | None, list[str]]:
    """The labels of the ``chosen`` rows (``(n,)`` or ``(n, K)``, None: unlabelled) and the
    class or finding names, the same for every split of ``table``.

    ``label_columns``, when given, are the labels (a ``label`` column is then one more
    column); otherwise a ``labels`` column, else a ``label`` column, with a value in
    some chosen row, labels the split."""
    if label_columns:
        if "labels" in columns:
            raise DataError(
                f"{path} has a labels column and label_columns {list(label_columns)} was "
                "given: drop label_columns to read the labels column, or drop that column."
            )
        missing = [c for c in label_columns if c not in columns]
        if missing:
            raise DataError(
                f"{path} has no column {', '.join(missing)} (label_columns); its columns are "
                f"{', '.join(columns)}: name the finding columns as the header spells them."
            )
        return _finding_columns(path, chosen, list(label_columns)), list(label_columns)
    if "label" in columns and "labels" in columns:
        raise DataError(
            f"{path} has both a label column (one class per image) and a labels column "
            "(findings separated by |): drop one of them."
        )
    if "labels" in columns and any(r["labels"] for r in chosen):
        return _finding_lists(path, table, chosen)
    if "label" in columns and any(r["label"] for r in chosen):
        refuse_rows(path, [r for r in chosen if not r["label"]], "no label", "label every row")
        names = sorted({r["label"] for r in table if r["label"]}, key=_label_order)
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[r["label"]] for r in chosen], np.int64), names
    return None, []


def _finding_columns(path: Path, chosen: list[dict[str, str]], names: list[str]) -> np.ndarray:
    matrix = np.zeros((len(chosen), len(names)), np.int64)
    bad: list[dict[str, str]] = []
    for j, r in enumerate(chosen):
        for c, name in enumerate(names):
            value = r.get(name, "").lower()
            if value in PRESENT:
                matrix[j, c] = 1
            elif value not in ABSENT:
                bad.append({**r, "#bad": f"{name}={r.get(name) or 'empty'}"})
                break
    refuse_rows(path, bad, "a label column value other than 0 or 1",
                "write 1 (finding present) or 0 (absent) in every label column (also "
                "true/false); map other values, such as -1 for 'uncertain', to 0 or 1 first",
                shown=lambda r: r["#bad"])  # fmt: skip
    return matrix


def _names_in(cell: str) -> list[str]:
    return [n.strip() for n in cell.split("|") if n.strip()]


def _finding_lists(
    path: Path, table: list[dict[str, str]], chosen: list[dict[str, str]]
) -> tuple[np.ndarray, list[str]]:
    """``labels`` cells (``a|b``, ``none``) -> the ``(n, K)`` matrix and the sorted findings
    named anywhere in the table."""
    refuse_rows(path, [r for r in chosen if not _names_in(r["labels"])], "an empty labels cell",
                f"write the findings separated by | (e.g. effusion|nodule), or {NO_FINDING} "
                "for an image without findings")  # fmt: skip
    mixed = [r for r in chosen
             if len(cell := _names_in(r["labels"])) > 1 and NO_FINDING in map(str.lower, cell)]  # fmt: skip
    refuse_rows(path, mixed, f"{NO_FINDING} beside findings",
                f"write {NO_FINDING} alone (no finding), or only the findings",
                shown=lambda r: r["labels"])  # fmt: skip
    found = {n for r in table for n in _names_in(r.get("labels", "")) if n.lower() != NO_FINDING}
    if not found:
        raise DataError(
            f"{path}: its labels column names no finding (every row says {NO_FINDING}): "
            "write each image's findings separated by |, e.g. effusion|nodule."
        )
    findings = sorted(found)
    index = {name: i for i, name in enumerate(findings)}
    matrix = np.zeros((len(chosen), len(findings)), np.int64)
    for j, r in enumerate(chosen):
        for name in _names_in(r["labels"]):
            if name.lower() != NO_FINDING:
                matrix[j, index[name]] = 1
    return matrix, findings


def _label_order(name: str) -> tuple[int, float | str]:
    """Integer labels in numeric order (2 before 10), then names alphabetically."""
    try:
        return 0, float(name)
    except ValueError:
        return 1, name
