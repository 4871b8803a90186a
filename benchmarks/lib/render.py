"""What the quality study's sections (benchmarks/lib/render_cifar.py,
render_pneumonia.py) are built of: table cells, the order and colours of runs, and the
command lines that rerun a group.

Records are grouped by (budget in minutes, tag); a record without a tag is in the group of
tag ``None``. Figures are mean ± standard deviation over seeds.
"""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Iterable
from typing import Any

from .records import Group, group_of, variant_of


def plot_name(run: str, limit: int = 44) -> str:
    """``run`` as a figure labels it: a long list of ``--set`` options cut to ``limit``
    characters, so that it does not run over the next panel (tables keep the whole name)."""
    return run if len(run) <= limit else run[: limit - 2] + "…]"


def mean_sd(values: list[float], scale: float = 100, digits: int = 1) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values) * scale:.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values) * scale:.{digits}f}{sd} (n={len(values)})"


def steps_x_batch(rs: list[dict]) -> str:
    return f"{statistics.mean([r['steps'] for r in rs]):.0f} x {rs[0]['batch']}" if rs else "-"


def images_per_s(rs: list[dict]) -> str:
    return f"{statistics.mean([r['images_per_s'] for r in rs]):.0f}" if rs else "-"


def method_colours(records: list[dict], order: list[str], cycle: list[str]) -> dict[str, str]:
    """A colour per method: ``order``'s first, then the rest (the short-budget recipes)
    in name order, so that ``simclr_small`` and ``byol_small`` are not both black."""
    rest = sorted({r["method"] for r in records if r["side"] != "baseline"} - set(order))
    return dict(zip([*order, *rest], cycle))


def recorded(rs: Iterable[dict], key: str) -> list[Any]:
    return sorted({r[key] for r in rs if r.get(key) is not None})


def command(rs: list[dict], order: list[str], data: str | None = None) -> str:
    """The command lines that run the records ``rs`` of one group: as many seeds as its
    most-seeded run has (a run with fewer is listed as not yet run), and how many torch
    threads they ran with, where that is recorded but differs between runs. Runs of a
    variant get their own command: a config as committed at a revision
    (``selfsup/simclr@REV``) with ``--before REV``, options set
    (``selfsup/simclr[lars_clip=false]``) with ``--set``, another backbone evaluated
    (``selfsup/dino[backbone=student]``) with ``--eval-backbone``."""
    budget, tag = group_of(rs[0])
    seeds = max(len({r["seed"] for r in rs if r["run"] == run}) for run in {r["run"] for r in rs})
    parts = ["benchmarks/quality.py"] + (["--data", data] if data else [])
    parts += ["--budget-min", f"{budget:g}", "--seeds", str(seeds)]
    points, threads = recorded(rs, "points"), recorded(rs, "threads")
    if len(points) == 1:
        parts += ["--points", str(points[0])]
    if len(threads) == 1:
        parts += ["--threads", str(threads[0])]
    if tag:
        parts += ["--tag", tag]
    by_variant: dict[str, list[str]] = {}
    for run in sorted({r["run"] for r in rs}, key=lambda run: (rank(run, order), run)):
        name, variant = variant_of(run)
        by_variant.setdefault(variant, []).append(name)
    lines = []
    for variant in sorted(by_variant):  # today's configs ("") first
        own = [r for r in rs if variant_of(r["run"])[1] == variant]
        flags = []
        if len(points) > 1 and len(recorded(own, "points")) == 1:
            flags += ["--points", str(recorded(own, "points")[0])]
        rev = own[0].get("config_rev")
        flags += ["--before", rev] if rev else []
        sets = own[0].get("set") or {}
        flags += (
            ["--set", *(shlex.quote(f"{key}={value}") for key, value in sets.items())]
            if sets
            else []
        )
        backbone = own[0].get("eval_backbone")
        flags += ["--eval-backbone", backbone] if backbone else []
        flags += ["--match-steps"] if variant and all(r.get("matched_steps") for r in own) else []
        lines.append("`" + " ".join([*parts, *flags, "--runs", *by_variant[variant]]) + "`")
    line = ", ".join(lines)
    if len(threads) > 1:
        line += f" (torch threads per run: {', '.join(map(str, threads))})"
    return line


def rank(run: str, order: list[str]) -> int:
    method = variant_of(run)[0].split("/", 1)[1]  # selfsup/simclr@REV: beside selfsup/simclr
    return order.index(method) if method in order else len(order)


def group_name(group: Group) -> str:
    return f"{group[0]:g} min" + (f", tag `{group[1]}`" if group[1] else "")
