"""The CIFAR section of the quality study ("Learning per CPU-minute"): the main table and
figure of the reference group's runs, then a table per other budget or tag with its
figure."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

from .records import Group, group_of, groups_of, variant_of
from .render import (
    command,
    group_name,
    images_per_s,
    mean_sd,
    method_colours,
    plot_name,
    rank,
    recorded,
    steps_x_batch,
)
from .render_variants import before_after, config_line

# line styles of the baselines' horizontal lines, in their name order (all grey)
BASELINE_STYLES = [":", "-.", (0, (1, 3)), (0, (5, 2)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2, 1, 2))]


def draw_baselines(ax: Any, records: list[dict]) -> None:
    """Each CIFAR baseline's mean kNN top-1 as a grey horizontal line of its own style."""
    styles = itertools.chain(BASELINE_STYLES, itertools.repeat(":"))
    for name in sorted({r["method"] for r in records if r["side"] == "baseline"}):
        accs = [r["final"]["knn"] * 100 for r in records if r["method"] == name]
        ax.axhline(statistics.mean(accs), color="grey", linewidth=1, linestyle=next(styles),
                   label=f"baseline: {name}")  # fmt: skip


def crossing(curve: list[dict], level: float) -> str:
    """The training minute at which the kNN curve first reaches ``level`` (linear between
    the marks), ``<= m`` when its first mark is already above, ``-`` when it never does."""
    previous = None
    for point in curve:
        if point["knn"] >= level:
            if previous is None:
                return f"<= {point['minutes']:.1f}"
            (m0, k0), (m1, k1) = previous, (point["minutes"], point["knn"])
            return f"{m0 + (level - k0) / (k1 - k0) * (m1 - m0):.1f}"
        previous = point["minutes"], point["knn"]
    return "-"


def marks_cell(rs: list[dict]) -> str:
    """The kNN curve averaged over seeds, mark by mark: ``minutes: top-1 %``."""
    n = min(len(r["curve"]) for r in rs)
    points = []
    for i in range(n):
        minutes = statistics.mean([r["curve"][i]["minutes"] for r in rs])
        knn = statistics.mean([r["curve"][i]["knn"] for r in rs])
        points.append(f"{minutes:.{0 if minutes >= 10 else 1}f}: {knn * 100:.1f}")
    return ", ".join(points)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "not yet run"
    sd = f" ± {statistics.stdev(values) * 100:.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values) * 100:.1f}{sd} (n={len(values)})"


def cifar_section(records: list[dict], wanted_seeds: int, methods: dict[str, tuple[str, str]],
                  reference: Group, figure: Path, k: int, t: float, machine: str) -> str:  # fmt: skip
    """The CIFAR section: the main table and figure (``figure``) of the ``reference``
    group's runs, then a table per other budget or tag (:func:`budget_tables`).
    ``methods``: method -> (selfsup config, lightly's counterpart)."""
    budget_min = reference[0]
    runs = [r for r in records
            if r["side"] != "baseline" and group_of(r) == reference]  # fmt: skip
    by = lambda run: [r for r in runs if r["run"] == run]  # noqa: E731
    rows = ["| method | selfsup kNN top-1 % | lightly's recipe kNN top-1 % | selfsup - lightly "
            "(points) | steps x batch (selfsup / lightly) | selfsup img/s | probe % (selfsup / lightly) |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, (_, counterpart) in methods.items():
        s, lt = by(f"selfsup/{method}"), by(f"lightly/{counterpart}")
        sk = [r["final"]["knn"] for r in s]
        lk = [r["final"]["knn"] for r in lt]
        diff = f"{(statistics.mean(sk) - statistics.mean(lk)) * 100:+.1f}" if sk and lk else "-"

        ips = f"{statistics.mean([r['images_per_s'] for r in s]):.0f}" if s else "-"
        probes = [r["final"]["probe"] for r in s if "probe" in r["final"]]
        lprobes = [r["final"]["probe"] for r in lt if "probe" in r["final"]]
        probe = f"{_mean_sd(probes)} / {_mean_sd(lprobes)}" if probes or lprobes else "-"
        label = method if counterpart == method else f"{method} (vs lightly {counterpart})"
        rows.append(f"| {label} | {_mean_sd(sk)} | {_mean_sd(lk)} | {diff} | "
                    f"{steps_x_batch(s)} / {steps_x_batch(lt)} | {ips} | {probe} |")  # fmt: skip
    base = [r for r in records if r["side"] == "baseline"]
    for name in sorted({r["method"] for r in base}):
        finals = [r["final"] for r in base if r["method"] == name]
        probes = [f["probe"] for f in finals if "probe" in f]
        rows.append(f"| baseline: {name} | {_mean_sd([f['knn'] for f in finals])} | | | | | "
                    f"{_mean_sd(probes) if probes else ''} |")  # fmt: skip
    exist = sorted({(r["run"], r["seed"]) for r in runs})
    listed = ", ".join(f"{run} seed {seed}" for run, seed in exist) or "none"
    missing = [f"{side}/{m if side == 'selfsup' else c}" for m, (_, c) in methods.items()
               for side in ("selfsup", "lightly")]  # fmt: skip
    missing = sorted({m for m in missing if len(by(m)) < wanted_seeds})
    full = [
        f"{r['run']}: {r['config_epochs']} epochs x 15,000 images at {r['images_per_s']:.0f} img/s = "
        f"{r['config_epochs'] * 15000 / r['images_per_s'] / 3600:.1f} h "
        f"({r['config_epochs'] * 50000 / r['images_per_s'] / 3600:.0f} h on all 50,000 CIFAR-10 images)"
        for r in {r["run"]: r for r in runs if r["side"] == "selfsup"}.values()
    ]  # fmt: skip
    threads = recorded(runs, "threads")
    body = [
        f"`benchmarks/quality.py --budget-min {budget_min:g} --seeds {wanted_seeds}` "
        f"(runs added over sessions; `--render` redraws). Weighted kNN, k = {k}, T = {t}, "
        "on the 5,000 test images against the 15,000 training images of cifar10_jpeg.npz; "
        "mean ± standard deviation over seeds, in %. Machine of the runs: "
        + (" / ".join(recorded(runs, "machine")) or machine) + "."
        + (f" torch threads: {', '.join(map(str, threads))}." if threads else ""),
        "",
        *rows,
        "",
        f"Runs recorded: {listed}.",
        f"Not yet run (fewer than {wanted_seeds} seeds): {', '.join(missing) or 'none'}.",
        "",
        *config_line(runs),
        "How long a full run of the config takes here (at the measured training speed):",
        "",
        *[f"- {line}" for line in full],
        "",
        "![kNN top-1 against training minutes](quality_knn.png)",
        "",
        *budget_tables(records, reference, list(methods),
                       figure.with_name(figure.stem + "_budgets.png")),
    ]  # fmt: skip
    plot_cifar(records, reference, list(methods), figure)
    return "\n".join(body)


def plot_cifar(records: list[dict], reference: Group, order: list[str], figure: Path) -> None:
    """kNN curves of the ``reference`` group's runs and the baselines as horizontal lines."""
    budget_min = reference[0]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    colours = method_colours(records, order, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    markers = "osD^v"
    for r in records:
        if r["side"] == "baseline" or group_of(r) != reference:
            continue
        ax.plot([p["minutes"] for p in r["curve"]], [p["knn"] * 100 for p in r["curve"]],
                marker=markers[r["seed"] % len(markers)], color=colours[r["method"]],
                linestyle="-" if r["side"] == "selfsup" else "--",
                label=f"{plot_name(r['run'])} seed {r['seed']}")  # fmt: skip
    draw_baselines(ax, records)
    ax.set_xlim(0, budget_min * 1.05)
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("kNN top-1 on the test split (%)")
    ax.set_title("selfsup (solid) vs lightly's recipes (dashed), cifar10_jpeg")
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1)
    )  # beside the curves, not on them
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def budget_tables(records: list[dict], reference: Group, order: list[str],
                  figure: Path) -> list[str]:  # fmt: skip
    """Lines for RESULTS.md: one table per group of runs other than ``reference``, each
    run beside the same run in the reference group; draws ``figure`` when there are any."""
    runs = [r for r in records if r["side"] != "baseline"]
    groups = [g for g in groups_of(runs) if g != reference]
    if not groups:
        return []
    raw = [r["final"]["knn"] for r in records if r["run"] == "baseline/raw_pixels"]
    level = statistics.mean(raw) if raw else None
    ref_name = f"{reference[0]:g}-min" + (f" `{reference[1]}`" if reference[1] else "")
    cross = f"reaches raw pixels' {level * 100:.1f} % at (min, per seed)" if raw else "-"
    lines = [f"### Other budgets and tags ({', '.join(group_name(g) for g in groups)})", ""]
    for group in groups:
        rs = [r for r in runs if group_of(r) == group]
        lines += [f"**{group_name(group)}**: {command(rs, order)}. Machine of the "
                  f"runs: {' / '.join(recorded(rs, 'machine'))}.", "",
                  f"| run | kNN top-1 % | kNN at the marks (min: %) | {cross} | probe % | "
                  f"steps x batch | img/s | {ref_name} runs: kNN top-1 % |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name in sorted({r["run"] for r in rs}, key=lambda run: (rank(run, order), run)):
            mine = sorted((r for r in rs if r["run"] == name), key=lambda r: r["seed"])
            twin = variant_of(name)[0]  # selfsup/simclr@REV: beside the reference's selfsup/simclr
            ref = [r["final"]["knn"] for r in runs if r["run"] == twin and group_of(r) == reference]
            probes = [r["final"]["probe"] for r in mine if "probe" in r["final"]]
            reached = " / ".join(crossing(r["curve"], level) for r in mine) if raw else "-"
            lines.append(f"| {name} | {mean_sd([r['final']['knn'] for r in mine])} | "
                         f"{marks_cell(mine)} | {reached} | {mean_sd(probes)} | {steps_x_batch(mine)} | "
                         f"{images_per_s(mine)} | {mean_sd(ref)} |")  # fmt: skip
        lines += ["", *config_line(rs), *before_after(rs, order)]
    lines += [f"![kNN top-1 against training minutes, other budgets and tags]({figure.name})", ""]
    plot_budgets(records, reference, groups, order, figure)
    return lines


def plot_budgets(records: list[dict], reference: Group, groups: list[Group], order: list[str],
                 figure: Path) -> None:  # fmt: skip
    """kNN curves of the runs in ``groups`` (one line style per group), the same runs of
    the reference group faint and dotted, and the baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    colours = method_colours(records, order, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    styles = dict(zip(groups, ["-", "--", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))] * 4))
    # each variant of a config its own dash pattern, so that two variants of one run differ
    variants = sorted({variant_of(r["run"])[1] for r in records} - {""})
    dashes = dict(
        zip(variants, [(0, (6, 2, 1, 2)), (0, (1, 1)), (0, (8, 3)), (0, (4, 1, 1, 1, 1, 1))] * 8)
    )
    shown = {r["run"] for r in records if r["side"] != "baseline" and group_of(r) in groups}
    for r in records:
        if r["side"] == "baseline" or r["run"] not in shown:
            continue
        group = group_of(r)
        if group not in groups and group != reference:
            continue
        variant = variant_of(r["run"])[1]
        faint, before = group == reference, bool(variant)  # a variant: hollow, its own dashes
        colour = colours.get(r["method"], "black")
        ax.plot([p["minutes"] for p in r["curve"]], [p["knn"] * 100 for p in r["curve"]],
                marker="os"[r["seed"] % 2], markersize=3 if faint else 5, color=colour,
                markerfacecolor="white" if before else colour, alpha=0.35 if faint else 1.0,
                linestyle=":" if faint else dashes[variant] if before else styles[group],
                label=f"{plot_name(r['run'])} seed {r['seed']} ({group_name(group)})")  # fmt: skip
    draw_baselines(ax, records)
    # a run with --match-steps may train past its budget: its last point stays in view
    ends = [r["curve"][-1]["minutes"] for r in records if r["side"] != "baseline"
            and r["run"] in shown and group_of(r) in groups]  # fmt: skip
    ax.set_xlim(0, max([g[0] for g in groups] + ends) * 1.05)
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("kNN top-1 on the test split (%)")
    ax.set_title("cifar10_jpeg: other budgets and tags\n(faint dotted: the same runs, "
                 f"{group_name(reference)}; hollow, own dashes: variants of a config)",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure, dpi=110, bbox_inches="tight")  # long run names: keep the legend whole
    plt.close(fig)
