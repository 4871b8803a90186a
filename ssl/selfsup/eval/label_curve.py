"""Label efficiency: an evaluator trained on 1 %, 10 %, ... of the training labels.

For each of ``n_seeds`` seeds, :func:`selfsup.eval.splits.label_fractions` draws nested,
stratified subsets of the training split (by group when groups exist; the 1 % subset of
a seed lies inside its 10 % subset; every class or finding present keeps at least one
image). The evaluator runs once per (fraction, seed); each fraction becomes one row of
the curve: the mean and the standard deviation over the seeds of the headline figure
(``top1`` or ``macro_auroc``) and of the other figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.eval.splits import label_fractions

#: The figures a curve row summarises, where the runs have them.
FIGURES = ("top1", "top5", "balanced_accuracy", "auroc", "macro_auroc", "micro_auroc", "mAP",
           "calibration_error")  # fmt: skip


def check_label_fractions(fractions: Sequence[float] | None, n_seeds: int = 1) -> None:
    """One line for fractions outside (0, 1] or fewer than one seed, before any work."""
    from selfsup.errors import ConfigError

    bad = [f for f in fractions or () if not 0 < f <= 1]
    if bad or n_seeds < 1:
        raise ConfigError(
            f"--label_fraction {' '.join(map(str, fractions or []))} --label_seeds {n_seeds}: give "
            "fractions in (0, 1], e.g. 0.01 0.1 1.0, and 1 or more seeds."
        )


def label_curve(
    labels: np.ndarray,
    groups: np.ndarray | None,
    fractions: Sequence[float],
    n_seeds: int,
    seed: int,
    run: Callable[[np.ndarray, int], dict[str, Any]],
) -> dict[str, Any]:
    """``run(indices into labels, seed) -> figures`` for every fraction and seed ->
    ``{"headline", "label_curve": rows, "runs": every run's figures}``; the headline is
    the largest fraction's mean."""
    check_label_fractions(fractions, n_seeds)
    runs = []
    for s in range(seed, seed + n_seeds):
        for fraction, idx in label_fractions(labels, groups, fractions, s).items():
            result = run(idx, s)
            result.pop("confusion_matrix", None)
            runs.append({"label_fraction": fraction, "label_seed": s, "n_labelled": len(idx),
                         **result})  # fmt: skip
    rows = curve_rows(runs)
    top = rows[-1]
    headline = {"metric": top["metric"], "value": top["mean"], "std": top["std"],
                "label_fraction": top["fraction"]}  # fmt: skip
    return {"headline": headline, "label_curve": rows, "runs": runs}


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None}  # fmt: skip


def curve_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fraction (ascending): ``fraction``, ``n_labelled`` (mean over seeds),
    ``n_seeds``, the headline ``metric`` with its ``mean`` and ``std`` (sample standard
    deviation; None for one seed), and ``{figure: {mean, std}}`` for each of
    :data:`FIGURES` the runs report (a figure a run leaves undefined is left out)."""
    rows = []
    for fraction in sorted({r["label_fraction"] for r in runs}):
        same = [r for r in runs if r["label_fraction"] == fraction]
        metric = same[0]["headline"]["metric"]
        values = [r["headline"]["value"] for r in same if r["headline"]["value"] is not None]
        row: dict[str, Any] = {
            "fraction": fraction,
            "n_labelled": statistics.fmean(r["n_labelled"] for r in same),
            "n_seeds": len(same),
            "metric": metric,
            **(_mean_std(values) if values else {"mean": None, "std": None}),
        }
        for name in FIGURES:
            found = [r[name] for r in same if isinstance(r.get(name), float | int)]
            if found and name != metric:
                row[name] = _mean_std([float(v) for v in found])
        rows.append(row)
    return rows


def _value(row: dict[str, Any], metric: str | None) -> tuple[float | None, float | None]:
    """A row's (mean, std) of ``metric`` (None: the headline)."""
    if metric is None or metric == row["metric"]:
        return row["mean"], row["std"]
    found = row.get(metric)
    return (found["mean"], found["std"]) if isinstance(found, dict) else (None, None)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def curve_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table: fraction, labelled images, the headline and (where
    the rows have them and they are not the headline) AUROC and macro AUROC, mean ± std."""
    metric = rows[0]["metric"] if rows else "headline"
    extra = [m for m in ("auroc", "macro_auroc") if m != metric and any(m in r for r in rows)]
    head = ["labels", "images", f"{metric} (mean ± std)", *[f"{m} (mean ± std)" for m in extra],
            "seeds"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['fraction']:g}", f"{r['n_labelled']:.0f}", _cell(r["mean"], r["std"]),
                 *[_cell(*_value(r, m)) for m in extra], str(r["n_seeds"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_label_curves(
    curves: dict[str, list[dict[str, Any]]], path: Path, metric: str | None = None
) -> None:
    """The headline (or ``metric``) against the fraction of labels (log axis), one line
    per evaluation with its ± std band, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    metrics = set()
    for name, rows in curves.items():
        points = [(r["fraction"], *_value(r, metric)) for r in rows]
        points = [p for p in points if p[1] is not None]
        if not points:
            continue
        x = np.array([p[0] for p in points])
        mean = np.array([p[1] for p in points])
        std = np.array([p[2] or 0.0 for p in points])
        line = ax.plot(x, mean, marker="o", label=name)[0]
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        metrics.update([metric] if metric else [r["metric"] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training labels")
    ax.set_ylabel(" / ".join(sorted(metrics)) or "headline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
