"""The evaluators' files: ``metrics.json``, the confusion matrix or the label-efficiency
curve in an evaluation directory, and one table (and one curve figure) over many of them
(``selfsup summary``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from selfsup.eval.label_curve import curve_table, save_label_curves
from selfsup.eval.metrics import class_names_for
from selfsup.run_directory import RunDir

#: The columns ``selfsup summary`` shows when some row has them.
COLUMNS = ("task", "headline", "top1", "top5", "balanced_accuracy", "auroc", "macro_auroc",
           "micro_auroc", "mAP", "calibration_error", "lr", "weight_decay")  # fmt: skip
#: Kept in metrics.json, left out of the JSON line.
FILE_ONLY = ("confusion_matrix", "runs", "per_image")


def eval_dir(ckpt: str, task: str, data: str, out: str | None) -> Path:
    """Where an evaluation writes: ``out``, else beside the run (``RUN/eval/<task>-<data>``)."""
    if out:
        return Path(out)
    run = RunDir.of_checkpoint(ckpt) or RunDir(Path(ckpt).parent)  # an export: beside it
    return run.evaluation(task, data)


def write_report(result: dict[str, Any], classes: list[str], out: Path) -> dict[str, Any]:
    """``metrics.json`` and, in ``out``, ``confusion_matrix.png`` (single-label) or
    ``label_curve.png`` (a label-efficiency curve); returns the result for the JSON line:
    without the file-only fields, with ``eval_dir``."""
    out.mkdir(parents=True, exist_ok=True)
    confusion = result.get("confusion_matrix")
    if confusion is not None:
        names = class_names_for(classes, len(confusion))
        save_confusion_matrix(confusion, names, out / "confusion_matrix.png")
    if "label_curve" in result:
        save_label_curves({_curve_name(result): result["label_curve"]}, out / "label_curve.png")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    line = {k: v for k, v in result.items() if k not in FILE_ONLY}
    return {**line, "eval_dir": str(out)}


def _curve_name(result: dict[str, Any]) -> str:
    """The legend's name for an evaluation's curve: a run's checkpoint is named after its
    run (every run's file is ``last.ckpt``, or Lightning's ``hpc_ckpt_N.ckpt``), any
    other file (an export) after its stem."""
    ckpt = result.get("checkpoint")
    if not ckpt:
        return str(result.get("task", "evaluation"))
    run = RunDir.of_checkpoint(ckpt)  # not resolved: a symlinked run keeps its own name
    return run.root.name if run is not None else Path(ckpt).stem


def save_confusion_matrix(confusion: list[list[int]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = torch.tensor(confusion, dtype=torch.float)
    rates = m / m.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def gather_metrics(paths: list[Path]) -> list[dict[str, Any]]:
    """Every ``metrics.json`` under the given directories (or the files themselves),
    each with ``name`` (its directory) added, in name order."""
    rows = []
    for path in paths:
        files = [path] if path.is_file() else sorted(path.rglob("metrics.json"))
        for f in files:
            row = json.loads(f.read_text())
            row["name"] = str(f.parent.relative_to(path)) if path.is_dir() else str(f.parent)
            if row["name"] == ".":
                row["name"] = path.name
            rows.append(row)
    return rows


def _headline(row: dict[str, Any]) -> str | None:
    h = row.get("headline")
    if not isinstance(h, dict) or h.get("value") is None:
        return None
    std = f" ± {h['std']:.4f}" if h.get("std") is not None else ""
    at = f" @ {h['label_fraction']:g}" if "label_fraction" in h else ""
    return f"{h['metric']} {h['value']:.4f}{std}{at}"


def summary_table(rows: list[dict[str, Any]], csv_path: Path, metric: str | None = None) -> str:
    """The rows as a Markdown table (the columns some row has), also written as CSV, and
    each label-efficiency curve's table; the curves of every row that has one are drawn
    together in ``label_curves.png`` beside the CSV (their headline, or ``metric``)."""
    rows = [{**r, "headline": _headline(r)} for r in rows]
    columns = ["name", *[c for c in COLUMNS if any(r.get(c) is not None for r in rows)],
               "checkpoint"]  # fmt: skip
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    curves = {r["name"]: r["label_curve"] for r in rows if r.get("label_curve")}
    for name, curve in curves.items():
        lines += ["", f"{name}:", curve_table(curve)]
    if curves:
        figure = csv_path.with_name("label_curves.png")
        save_label_curves(curves, figure, metric)
        lines += ["", f"curves: {figure}"]
    return "\n".join(lines)
