"""A study's records: one JSON list per file in benchmarks/results, one entry per run.

A quality run's record is keyed by its run's name, seed, budget and tag; records of one
budget and tag are a group (a record without a tag is in the group of tag ``None``). A
run's name says which variant of a config it trained (:func:`run_name`), and a selfsup
record keeps the fingerprint of the config text it trained (:func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Group = tuple[float, "str | None"]


def load_records(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def write_records(path: Path, records: list[dict]) -> None:
    """``records`` to ``path``, replaced in one rename."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(partial, path)


def record_key(record: dict) -> tuple:
    return record["run"], record["seed"], record.get("budget_min"), record.get("tag") or None


def save_record(path: Path, records: list[dict], new: dict) -> None:
    """Add ``new`` to the records file, replacing the record of the same run, seed, budget
    and tag; the file is read again first, so that records another process wrote since
    are kept, and replaced in one rename."""
    records[:] = [r for r in load_records(path) if record_key(r) != record_key(new)]
    records.append(new)
    write_records(path, records)


def group_of(record: dict) -> Group:
    return record["budget_min"], record.get("tag") or None


def groups_of(records: Iterable[dict]) -> list[Group]:
    """The groups (budget, tag) of ``records``, by budget, then tag (untagged first)."""
    return sorted({group_of(r) for r in records}, key=lambda g: (g[0], g[1] or ""))


def variant_of(run: str) -> tuple[str, str]:
    """(today's run, the variant): ``selfsup/simclr@REV[lars_clip=false]`` ->
    (``selfsup/simclr``, ``@REV[lars_clip=false]``); ``selfsup/simclr`` -> (itself, "")."""
    cut = min((i for i in (run.find("@"), run.find("[")) if i >= 0), default=len(run))
    return run[:cut], run[cut:]


def run_name(
    side: str,
    method: str,
    rev: str | None,
    sets: dict[str, str] | None = None,
    eval_backbone: str | None = None,
) -> str:
    """``selfsup/simclr``; ``selfsup/simclr@REV`` for its config as committed at REV;
    ``selfsup/simclr[lars_clip=false]`` with options set (each named by its last part);
    ``selfsup/dino[backbone=student]`` evaluated on its student."""
    if side != "selfsup":
        return f"{side}/{method}"
    settings = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in (sets or {}).items()]
    settings += [f"backbone={eval_backbone}"] if eval_backbone else []
    brackets = f"[{','.join(settings)}]" if settings else ""
    return f"{side}/{method}" + (f"@{rev}" if rev else "") + brackets


def fingerprint(text: str, sets: dict[str, str] | None) -> str:
    """What a selfsup run trains, in 12 hex digits: its config's text and its ``--set``
    options. Records keep it (``config_sha``)."""
    return hashlib.sha256((text + json.dumps(sets or {}, sort_keys=True)).encode()).hexdigest()[:12]
