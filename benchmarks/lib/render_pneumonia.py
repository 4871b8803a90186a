"""The PneumoniaMNIST section of the quality study: every run's kNN and probe figures by
group (budget, tag), each run against the targets (raw pixels, its random-init backbone,
lightly's counterpart), and the figure."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

from .quality_data import BN_OF_DATA, LIGHTLY_RANDOM_INIT
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
from .render_variants import config_line

PNEUMONIA_HEADING = "Medical images: PneumoniaMNIST (`quality --data pneumonia`)"


def seeds_in_one_group(runs: list[dict], name: str, budget_min: float) -> int:
    """The most seeds of run ``name`` that one group (tag) at ``budget_min`` holds: seeds
    are compared within a group, so seeds spread over two machines do not add up."""
    seeds: dict[Group, set[int]] = {}
    for r in runs:
        if r["run"] == name and r["budget_min"] == budget_min:
            seeds.setdefault(group_of(r), set()).add(r["seed"])
    return max(map(len, seeds.values()), default=0)


def pneumonia_section(records: list[dict], wanted_seeds: int, order: list[str],
                      counterparts: dict[str, str], expected: list[str], figure: Path, k: int,
                      t: float, machine: str) -> str:  # fmt: skip
    """The RESULTS.md section of the PneumoniaMNIST runs (``counterparts``: selfsup method ->
    lightly's; ``expected``: the run names each 10-minute untagged group should hold
    ``wanted_seeds`` seeds of)."""
    runs = [r for r in records if r["side"] != "baseline"]
    base = [r for r in records if r["side"] == "baseline"]
    groups = groups_of(runs)
    commands = [command([r for r in runs if group_of(r) == g], order, "pneumonia")
                for g in groups]  # fmt: skip
    if base:
        commands.append("`benchmarks/quality.py --data pneumonia --baselines`")
    rows = ["| run | budget (min), tag | kNN acc % | kNN AUROC | probe AUROC | probe acc % | "
            "steps x batch | img/s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for group in groups:
        rs = [r for r in runs if group_of(r) == group]
        for name in sorted({r["run"] for r in rs}, key=lambda run: (rank(run, order), run)):
            mine = [r["final"] for r in rs if r["run"] == name]
            rows.append(f"| {name} | {group_name(group)} | {finals_cells(mine)} | "
                        f"{steps_x_batch([r for r in rs if r['run'] == name])} | "
                        f"{images_per_s([r for r in rs if r['run'] == name])} |")  # fmt: skip
    for name in sorted({r["method"] for r in base}, key=lambda m: (m != "raw pixels", m)):
        label = ("raw pixels (kNN: per-image mean-centred; probe: logistic regression on "
                 "standardised pixels)") if name == "raw pixels" else name  # fmt: skip
        rows.append(
            f"| baseline: {label} | | {finals_cells([r['final'] for r in base if r['method'] == name])} | | |"
        )
    exist = sorted({(r["run"], r["seed"], group_name(group_of(r))) for r in runs})
    listed = ", ".join(f"{run} seed {seed} ({g})" for run, seed, g in exist) or "none"
    machines = {g: recorded([r for r in runs if group_of(r) == g], "machine") for g in groups}
    if len({m for ms in machines.values() for m in ms}) > 1:
        # groups run on different machines: say which ran where (their speeds differ)
        where = "; ".join(f"{group_name(g)}: {' / '.join(ms)}" for g, ms in machines.items())
    else:
        where = runs[0]["machine"] if runs else machine
    targets = []
    for group in groups:
        # selfsup is held against lightly within a group only: one machine, one budget
        targets += against_targets([r for r in runs if group_of(r) == group], base, order,
                                   counterparts, group_name(group))  # fmt: skip
    missing = [name for name in expected if seeds_in_one_group(runs, name, 10.0) < wanted_seeds]
    body = [
        "Produced by " + ", ".join(commands or ["(no runs yet)"]) + " (runs added over sessions; "
        "`--data pneumonia --render` redraws). PneumoniaMNIST as in ../shared/data "
        "(pneumoniamnist.npz: 2,428 training and 468 test chest X-rays, both balanced, "
        "grayscale, 28 px; the 270 validation images are not used). Pretraining on the "
        f"training split; weighted kNN (k = {k}, T = {t}, cosine) with the training split as "
        "memory bank and the test split as queries, its AUROC scoring an image by the "
        "weighted vote share of pneumonia; the linear probe (`selfsup probe`'s, on cached "
        "features; head picked on 10 % of the training split) at the end of each run. selfsup "
        "runs its CIFAR configs (`selfsup/METHOD`: `*_cifar.yaml`; `selfsup/METHOD_small`: "
        "the `*_small.yaml` short-budget recipes) with 1-channel overrides (in_chans 1, "
        "grayscale views, mean "
        "0.5, std 0.25, 28 px, DINO's local crops 14 px; MAE's ViT patch 4: 7 x 7 tokens, "
        "I-JEPA's patch 2: 14 x 14); lightly's recipes see the gray image repeated to 3 "
        "channels at 28 px with their own transforms and ImageNet normalisation. "
        f"Mean ± standard deviation over seeds; accuracies in %. Machine of the runs: {where}.",
        "",
        *rows,
        "",
        *config_line(runs),
        *targets,
        f"Runs recorded: {listed}.",
        f"Not yet run at 10 min with {wanted_seeds} seeds on one machine and tag: "
        f"{', '.join(missing) or 'none'}.",
        "",
        f"![AUROC per run and kNN AUROC against training minutes]({figure.name})",
        "",
    ]  # fmt: skip
    plot_pneumonia(records, order, figure)
    return "\n".join(body)


def untrained_twin(record: dict) -> str:
    """The random-init baseline of a run's backbone (selfsup's I-JEPA: ViT-Tiny/2; the other
    ViTs: ViT-Tiny/4; lightly's ResNet recipes: lightly's ResNet-18 as they see the images;
    selfsup's ResNets: ResNet-18 with the run's own start, timm's zero-initialised last
    BatchNorm or torchvision's scale 1, read from the run's ``backbone_kwargs`` override)."""
    side, method = record["run"].split("/", 1)
    if side == "lightly" and not method.startswith(("mae", "ijepa")):
        return LIGHTLY_RANDOM_INIT
    if method.startswith("ijepa") and side == "selfsup":
        return "random-init ViT-Tiny/2 (ijepa)"
    if method.startswith(("mae", "ijepa")):
        return "random-init ViT-Tiny/4 (mae)"
    if backbone_kwargs(record).get("zero_init_last") is False:
        return "random-init ResNet-18, zero_init_last false"
    return "random-init ResNet-18"


def backbone_kwargs(record: dict) -> dict:
    """The ``backbone_kwargs`` a run's overrides gave its config ({} where none did)."""
    argv = record.get("overrides") or []
    flag = "--model.init_args.backbone_kwargs"
    return json.loads(argv[argv.index(flag) + 1]) if flag in argv else {}


def against_targets(runs: list[dict], base: list[dict], order: list[str],
                    counterparts: dict[str, str], group: str) -> list[str]:  # fmt: skip
    """One line per run of one group (``group``: its name): its mean probe AUROC against
    raw pixels' best AUROC, its backbone at random init (with BatchNorm's initial
    statistics and, where recorded, the data's), and (selfsup) lightly's counterpart in the
    same group."""

    def mean(rs: list[dict], key: str) -> float | None:
        values = [r["final"][key] for r in rs if key in r["final"]]
        return sum(values) / len(values) if values else None

    raw = [r for r in base if r["method"] == "raw pixels"]
    raw_best = max(filter(None, (mean(raw, "knn_auroc"), mean(raw, "probe_auroc"))), default=None)
    if not runs or raw_best is None:
        return []
    lines = [f"Against the targets, {group} (probe AUROC at the end, mean over seeds; raw "
             f"pixels' best AUROC {raw_best:.3f}):", ""]  # fmt: skip
    for name in sorted({r["run"] for r in runs}, key=lambda run: (rank(run, order), run)):
        p = mean([r for r in runs if r["run"] == name], "probe_auroc")
        if p is None:
            continue
        twin = untrained_twin(next(r for r in runs if r["run"] == name))
        parts = [f"raw pixels {p - raw_best:+.3f}"]
        for start in (twin, twin + BN_OF_DATA):
            rand = mean([r for r in base if r["method"] == start], "probe_auroc")
            if rand is not None:
                parts.append(f"{start} {p - rand:+.3f}")
        side, method = name.split("/", 1)
        counterpart = counterparts.get(method) if side == "selfsup" else None
        lightly = mean([r for r in runs if r["run"] == f"lightly/{counterpart}"], "probe_auroc")
        if lightly is not None:
            parts.append(f"lightly/{counterpart} {p - lightly:+.3f}")
        lines.append(f"- {name}: {p:.3f}; against " + ", ".join(parts))
    return [*lines, ""]


def finals_cells(finals: list[dict]) -> str:
    """kNN acc | kNN AUROC | probe AUROC | probe acc cells."""

    def of(key: str, scale: float, digits: int) -> str:
        return mean_sd([f[key] for f in finals if key in f], scale, digits)

    return " | ".join([of("knn", 100, 1), of("knn_auroc", 1, 3), of("probe_auroc", 1, 3),
                       of("probe", 100, 1)])  # fmt: skip


def plot_pneumonia(records: list[dict], order: list[str], figure: Path) -> None:
    """Top: kNN and probe AUROC of each run (every seed, and their mean), the runs of each
    group (budget, tag) apart, the baselines as horizontal lines. Below: kNN AUROC against
    training minutes, one panel per group (a group's runs share a machine and budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if r["side"] != "baseline"]
    base = [r for r in records if r["side"] == "baseline"]
    groups = groups_of(runs) or [(10.0, None)]
    fig = plt.figure(figsize=(max(14, 5.5 * len(groups)), 10.5))  # a panel per group
    grid = fig.add_gridspec(2, len(groups), height_ratios=(1, 1), hspace=0.75)
    left = fig.add_subplot(grid[0, :])
    colours = method_colours(records, order, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    columns = sorted({(r["run"], group_of(r)) for r in runs},
                     key=lambda c: (c[1][0], c[1][1] or "", rank(c[0], order), c[0]))  # fmt: skip
    for x, (name, group) in enumerate(columns):
        mine = [r for r in runs if r["run"] == name and group_of(r) == group]
        colour = colours.get(mine[0]["method"], "black")
        for key, marker, dx in (("knn_auroc", "o", -0.12), ("probe_auroc", "s", 0.12)):
            values = [r["final"][key] for r in mine if key in r["final"]]
            left.scatter([x + dx] * len(values), values, marker=marker, color=colour,
                         facecolors="none" if key == "knn_auroc" else colour, s=25)  # fmt: skip
            if values:
                left.hlines(statistics.mean(values), x + dx - 0.1, x + dx + 0.1, color=colour)
    for group in groups:  # each group's columns under its name, a line between groups
        xs = [x for x, (_, g) in enumerate(columns) if g == group]
        if xs:
            left.text((xs[0] + xs[-1]) / 2, 1.01, group_name(group).replace("`", ""),
                      transform=left.get_xaxis_transform(), ha="center", fontsize=8)  # fmt: skip
            if xs[0] > 0:
                left.axvline(xs[0] - 0.5, color="black", linewidth=0.8)
    left.scatter([], [], marker="o", facecolors="none", color="black", label="kNN AUROC")
    left.scatter([], [], marker="s", color="black", label="probe AUROC")
    lines = [
        ("raw pixels", "knn_auroc", "kNN on raw pixels", "grey", ":"),
        ("raw pixels", "probe_auroc", "logistic regression on pixels", "grey", "-."),
    ]
    untrained = sorted({r["method"] for r in base} - {"raw pixels"})
    twins = [m for m in untrained if not m.endswith(BN_OF_DATA)]
    twin_colour = dict(zip(twins, itertools.cycle(["tab:brown", "tab:olive", "tab:pink", "black",
                                                   "tab:cyan", "tab:red"])))  # fmt: skip
    lines += [(m, "probe_auroc", f"{m}: probe", twin_colour.get(m.removesuffix(BN_OF_DATA), "grey"),
               (0, (1, 1)) if m.endswith(BN_OF_DATA) else "--") for m in untrained]  # fmt: skip
    shown = [r["final"][key] for r in runs for key in ("knn_auroc", "probe_auroc")
             if key in r["final"]]  # fmt: skip
    for method, key, label, colour, style in lines:
        values = [r["final"][key] for r in base if r["method"] == method and key in r["final"]]
        if values:
            shown.append(statistics.mean(values))
            left.axhline(statistics.mean(values), color=colour, linewidth=1, linestyle=style,
                         label=f"baseline: {label} ({statistics.mean(values):.3f})")  # fmt: skip
    if shown:
        left.set_ylim(min(shown) - 0.02, min(1.0, max(shown) + 0.01))
    left.set_xlim(-0.6, len(columns) - 0.4)
    left.set_xticks(range(len(columns)), [plot_name(n) for n, _ in columns], rotation=45, ha="right",
                    fontsize=7)  # fmt: skip
    left.set_ylabel("AUROC on the test split\n(pneumonia vs normal)")
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    left.grid(alpha=0.3, axis="y")
    raw = [r["final"]["knn_auroc"] for r in base if r["method"] == "raw pixels"]
    for i, group in enumerate(groups):
        ax = fig.add_subplot(grid[1, i])
        for r in sorted((r for r in runs if group_of(r) == group),
                        key=lambda r: (rank(r["run"], order), r["run"], r["seed"])):  # fmt: skip
            curve = [p for p in r["curve"] if "knn_auroc" in p]
            ax.plot([p["minutes"] for p in curve], [p["knn_auroc"] for p in curve],
                    marker="os"[r["seed"] % 2], color=colours.get(r["method"], "black"),
                    linestyle=(":" if variant_of(r["run"])[1] else "-")
                    if r["side"] == "selfsup" else "--", markersize=4,
                    label=f"{plot_name(r['run'])} seed {r['seed']}")  # fmt: skip
        if raw:
            ax.axhline(statistics.mean(raw), color="grey", linewidth=1, linestyle=":",
                       label=f"kNN on raw pixels ({statistics.mean(raw):.3f})")  # fmt: skip
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.set_ylabel("kNN AUROC")
        mine = [r for r in runs if group_of(r) == group]
        cpus = ", ".join(sorted({r["machine"].split(", ")[1] for r in mine}))
        selfsup = sorted({r["precision"] for r in mine if r["side"] == "selfsup"})
        ax.set_title(f"{group_name(group).replace('`', '')}\n{cpus}; selfsup in "
                     f"{', '.join(selfsup)}, lightly in 32-true\nselfsup solid (its @REV and "
                     "[set] variants dotted), lightly dashed",
                     fontsize=8)  # fmt: skip
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle("PneumoniaMNIST (28 px, 1 channel)", fontsize=10)
    fig.savefig(figure, dpi=110, bbox_inches="tight")
    plt.close(fig)
