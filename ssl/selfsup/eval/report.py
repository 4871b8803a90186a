"""The evaluators' files: ``metrics.json`` and the confusion matrix in an evaluation
directory, and one table over many of them (``selfsup summary``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

#: The columns ``selfsup summary`` shows when some row has them.
COLUMNS = ("task", "top1", "top5", "balanced_accuracy", "auroc", "lr", "weight_decay")


def eval_dir(ckpt: str, task: str, data: str, out: str | None) -> Path:
    """Where an evaluation writes: ``out``, else beside the run (``RUN/eval/<task>-<data>``)."""
    if out:
        return Path(out)
    path = Path(ckpt)
    run = path if path.is_dir() else path.parent
    if run.name == "checkpoints":
        run = run.parent
    return run / "eval" / f"{task}-{Path(data).stem}"


def write_report(result: dict[str, Any], classes: list[str], out: Path) -> dict[str, Any]:
    """``metrics.json`` (with the confusion matrix) and ``confusion_matrix.png`` in ``out``;
    returns the result for the JSON line: without the matrix, with ``eval_dir``."""
    from selfsup.eval.metrics import save_confusion_matrix

    out.mkdir(parents=True, exist_ok=True)
    result = dict(result)
    confusion = result.pop("confusion_matrix")
    names = classes if len(classes) == len(confusion) else [str(i) for i in range(len(confusion))]
    save_confusion_matrix(confusion, names, out / "confusion_matrix.png")
    (out / "metrics.json").write_text(
        json.dumps({**result, "confusion_matrix": confusion}, indent=2)
    )
    return {**result, "eval_dir": str(out)}


def gather_metrics(paths: list[Path]) -> list[dict[str, Any]]:
    """Every ``metrics.json`` under the given directories (or the files themselves),
    each with ``name`` (its directory) added, in name order."""
    rows = []
    for path in paths:
        files = [path] if path.is_file() else sorted(path.rglob("metrics.json"))
        for f in files:
            row = json.loads(f.read_text())
            row["name"] = str(f.parent.relative_to(path)) if path.is_dir() else str(f.parent)
            rows.append(row)
    return rows


def summary_table(rows: list[dict[str, Any]], csv_path: Path) -> str:
    """The rows as a Markdown table (the columns some row has), also written as CSV."""
    columns = ["name", *[c for c in COLUMNS if any(c in r for r in rows)], "checkpoint"]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
