"""Tables and figures of benchmarks/quality.py besides its main CIFAR table: CIFAR runs at
other budgets or with a tag, and the PneumoniaMNIST section.

Records are grouped by (budget in minutes, tag); a record without a tag is in the group of
tag ``None``. Figures are mean ± standard deviation over seeds.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import shlex
import statistics
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Group = tuple[float, "str | None"]
REPO = Path(__file__).resolve().parent.parent
#: the label of a random-init baseline evaluated with BatchNorm statistics of the data
BN_OF_DATA = ", BatchNorm statistics of the training split"


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


def plot_name(run: str, limit: int = 44) -> str:
    """``run`` as a figure labels it: a long list of ``--set`` options cut to ``limit``
    characters, so that it does not run over the next panel (tables keep the whole name)."""
    return run if len(run) <= limit else run[: limit - 2] + "…]"


def mean_sd(values: list[float], scale: float = 100, digits: int = 1) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values) * scale:.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values) * scale:.{digits}f}{sd} (n={len(values)})"


def _shape(rs: list[dict]) -> str:
    return f"{statistics.mean([r['steps'] for r in rs]):.0f} x {rs[0]['batch']}" if rs else "-"


def _ips(rs: list[dict]) -> str:
    return f"{statistics.mean([r['images_per_s'] for r in rs]):.0f}" if rs else "-"


# line styles of the baselines' horizontal lines, in their name order (all grey)
BASELINE_STYLES = [":", "-.", (0, (1, 3)), (0, (5, 2)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2, 1, 2))]


def draw_baselines(ax: Any, records: list[dict]) -> None:
    """Each CIFAR baseline's mean kNN top-1 as a grey horizontal line of its own style."""
    styles = itertools.chain(BASELINE_STYLES, itertools.repeat(":"))
    for name in sorted({r["method"] for r in records if r["side"] == "baseline"}):
        accs = [r["final"]["knn"] * 100 for r in records if r["method"] == name]
        ax.axhline(statistics.mean(accs), color="grey", linewidth=1, linestyle=next(styles),
                   label=f"baseline: {name}")  # fmt: skip


def _colours(records: list[dict], order: list[str], cycle: list[str]) -> dict[str, str]:
    """A colour per method: ``order``'s first, then the rest (the short-budget recipes)
    in name order, so that ``simclr_small`` and ``byol_small`` are not both black."""
    rest = sorted({r["method"] for r in records if r["side"] != "baseline"} - set(order))
    return dict(zip([*order, *rest], cycle))


def _recorded(rs: Iterable[dict], key: str) -> list[Any]:
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
    points, threads = _recorded(rs, "points"), _recorded(rs, "threads")
    if len(points) == 1:
        parts += ["--points", str(points[0])]
    if len(threads) == 1:
        parts += ["--threads", str(threads[0])]
    if tag:
        parts += ["--tag", tag]
    by_variant: dict[str, list[str]] = {}
    for run in sorted({r["run"] for r in rs}, key=lambda run: (_rank(run, order), run)):
        name, variant = variant_of(run)
        by_variant.setdefault(variant, []).append(name)
    lines = []
    for variant in sorted(by_variant):  # today's configs ("") first
        own = [r for r in rs if variant_of(r["run"])[1] == variant]
        flags = []
        if len(points) > 1 and len(_recorded(own, "points")) == 1:
            flags += ["--points", str(_recorded(own, "points")[0])]
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


def _rank(run: str, order: list[str]) -> int:
    method = variant_of(run)[0].split("/", 1)[1]  # selfsup/simclr@REV: beside selfsup/simclr
    return order.index(method) if method in order else len(order)


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


def _marks(rs: list[dict]) -> str:
    """The kNN curve averaged over seeds, mark by mark: ``minutes: top-1 %``."""
    n = min(len(r["curve"]) for r in rs)
    points = []
    for i in range(n):
        minutes = statistics.mean([r["curve"][i]["minutes"] for r in rs])
        knn = statistics.mean([r["curve"][i]["knn"] for r in rs])
        points.append(f"{minutes:.{0 if minutes >= 10 else 1}f}: {knn * 100:.1f}")
    return ", ".join(points)


# -- CIFAR: the main table and figure -----------------------------------------------------
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

        def shape(rs: list[dict]) -> str:
            return (
                f"{statistics.mean([r['steps'] for r in rs]):.0f} x {rs[0]['batch']}" if rs else "-"
            )

        ips = f"{statistics.mean([r['images_per_s'] for r in s]):.0f}" if s else "-"
        probes = [r["final"]["probe"] for r in s if "probe" in r["final"]]
        lprobes = [r["final"]["probe"] for r in lt if "probe" in r["final"]]
        probe = f"{_mean_sd(probes)} / {_mean_sd(lprobes)}" if probes or lprobes else "-"
        label = method if counterpart == method else f"{method} (vs lightly {counterpart})"
        rows.append(f"| {label} | {_mean_sd(sk)} | {_mean_sd(lk)} | {diff} | "
                    f"{shape(s)} / {shape(lt)} | {ips} | {probe} |")  # fmt: skip
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
    threads = _recorded(runs, "threads")
    body = [
        f"`benchmarks/quality.py --budget-min {budget_min:g} --seeds {wanted_seeds}` "
        f"(runs added over sessions; `--render` redraws). Weighted kNN, k = {k}, T = {t}, "
        "on the 5,000 test images against the 15,000 training images of cifar10_jpeg.npz; "
        "mean ± standard deviation over seeds, in %. Machine of the runs: "
        + (" / ".join(_recorded(runs, "machine")) or machine) + "."
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
    colours = _colours(records, order, plt.rcParams["axes.prop_cycle"].by_key()["color"])
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


# -- CIFAR: budgets and tags beside the main table -----------------------------------------
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
    lines = [f"### Other budgets and tags ({', '.join(_group_name(g) for g in groups)})", ""]
    for group in groups:
        rs = [r for r in runs if group_of(r) == group]
        lines += [f"**{_group_name(group)}**: {command(rs, order)}. Machine of the "
                  f"runs: {' / '.join(_recorded(rs, 'machine'))}.", "",
                  f"| run | kNN top-1 % | kNN at the marks (min: %) | {cross} | probe % | "
                  f"steps x batch | img/s | {ref_name} runs: kNN top-1 % |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name in sorted({r["run"] for r in rs}, key=lambda run: (_rank(run, order), run)):
            mine = sorted((r for r in rs if r["run"] == name), key=lambda r: r["seed"])
            twin = variant_of(name)[0]  # selfsup/simclr@REV: beside the reference's selfsup/simclr
            ref = [r["final"]["knn"] for r in runs if r["run"] == twin and group_of(r) == reference]
            probes = [r["final"]["probe"] for r in mine if "probe" in r["final"]]
            reached = " / ".join(crossing(r["curve"], level) for r in mine) if raw else "-"
            lines.append(f"| {name} | {mean_sd([r['final']['knn'] for r in mine])} | "
                         f"{_marks(mine)} | {reached} | {mean_sd(probes)} | {_shape(mine)} | "
                         f"{_ips(mine)} | {mean_sd(ref)} |")  # fmt: skip
        lines += ["", *config_line(rs), *before_after(rs, order)]
    lines += [f"![kNN top-1 against training minutes, other budgets and tags]({figure.name})", ""]
    plot_budgets(records, reference, groups, order, figure)
    return lines


def before_after(rs: list[dict], order: list[str]) -> list[str]:
    """Lines for RESULTS.md: each run of a variant (a config as committed at a revision,
    ``selfsup/simclr@REV``, or with options set, ``selfsup/simclr[lars_clip=false]``)
    against the run of the same group it differs from by one change (``partner``), seed by
    seed; the difference is taken over the seeds both have run. No lines when the group
    has no pair."""
    names = {r["run"] for r in rs}
    pairs = sorted({(after, run) for run in names if (after := partner(run, names))},
                   key=lambda pair: (_rank(pair[1], order), pair[1]))  # fmt: skip
    if not pairs:
        return []
    lines = ["Before/after: each variant (`@REV`: the config as committed at that revision; "
             "`[key=value]`: that option set) against the run it differs from by one change: "
             "`@REV[key=value]` against `@REV`; `[key=value]` and `@REV` against today's "
             "config, or, where this group has no run of today's config, against the next "
             "later revision it has a run of. Today's code, this machine, these seeds.", "",
             "| variant | against | against: kNN top-1 % | variant: kNN top-1 % | "
             "against - variant (points; per seed) | steps x batch (against / variant) | "
             "backbone weights moved from their start, median relative change %: conv and linear, "
             "norm scales |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for after, before in pairs:
        new = {r["seed"]: r for r in rs if r["run"] == after}
        old = {r["seed"]: r for r in rs if r["run"] == before}
        both = sorted(set(new) & set(old))
        diffs = [(new[s]["final"]["knn"] - old[s]["final"]["knn"]) * 100 for s in both]
        per_seed = "; ".join(f"seed {s}: {d:+.1f}" for s, d in zip(both, diffs))
        delta = f"**{statistics.mean(diffs):+.1f}** ({per_seed})" if diffs else "-"
        shapes = f"{_shape(list(new.values()))} / {_shape(list(old.values()))}"
        lines.append(f"| {before} | {after} | {mean_sd([r['final']['knn'] for r in new.values()])} | "
                     f"{mean_sd([r['final']['knn'] for r in old.values()])} | {delta} | "
                     f"{shapes} | against {_moved(new)}; variant {_moved(old)} |")  # fmt: skip
    return [*lines, ""]


def partner(run: str, names: set[str]) -> str | None:
    """The run among ``names`` that ``run`` is one change away from, on the newer side:
    ``base@REV[sets]`` -> ``base@REV``; ``base[sets]`` -> ``base``; ``base@REV`` -> ``base``
    (today's config) or, where ``names`` has no run of it, the ``base@LATER`` whose
    revision is the earliest committed after REV. None for today's runs and where there
    is no such run."""
    base, variant = variant_of(run)
    if not variant:
        return None
    rev, _, sets = variant.partition("[")
    if rev and sets:
        return base + rev if base + rev in names else None
    if base in names:
        return base
    mine = commit_time(rev[1:]) if rev else None
    if mine is None:
        return None
    others = {variant_of(n)[1] for n in names if variant_of(n)[0] == base}
    later = sorted((t, base + other) for other in others
                   if other.startswith("@") and "[" not in other
                   and (t := commit_time(other[1:])) is not None and t > mine)  # fmt: skip
    return later[0][1] if later else None


@functools.cache
def commit_time(rev: str) -> int | None:
    """When git revision ``rev`` of this repository was committed (unix time; None when
    git cannot tell): what orders two runs of configs at different revisions."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%ct", rev, "--"], cwd=REPO,
                             capture_output=True, text=True)  # fmt: skip
    except OSError:  # no git on this machine: the report leaves such pairs out
        return None
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def fingerprint(text: str, sets: dict[str, str] | None) -> str:
    """What a selfsup run trains, in 12 hex digits: its config's text and its ``--set``
    options. Records keep it (``config_sha``)."""
    return hashlib.sha256((text + json.dumps(sets or {}, sort_keys=True)).encode()).hexdigest()[:12]


def config_as_at(record: dict) -> str | None:
    """Which version of its config a selfsup run of today's name trained, where that is not
    the config as it is now: ``REV^`` (the config as it was before commit REV changed
    it), found by the record's fingerprint along the config's git history; the commit
    itself where the file has changed since without a commit; ``"an uncommitted
    version"`` where no commit has that text. None for a run of today's config, a run
    named for its revision (``@REV``: the name says it) and a record without a
    fingerprint."""
    sha = record.get("config_sha")
    if not sha or record.get("config_rev") or "config" not in record:
        return None
    sets = record.get("set") or {}
    path = REPO / record["config"]
    if path.exists() and fingerprint(path.read_text(), sets) == sha:
        return None
    return _committed_as(record["config"], sha, json.dumps(sets, sort_keys=True))


@functools.cache
def _committed_as(rel: str, sha: str, sets: str) -> str:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        except OSError:  # no git on this machine
            return None
        return out.stdout if out.returncode == 0 else None

    revs = (git("log", "--format=%h", "--", rel) or "").split()  # newest first
    for newer, rev in zip([None, *revs], revs):
        text = git("show", f"{rev}:{rel}")
        if text is not None and fingerprint(text, json.loads(sets)) == sha:
            return f"{newer}^" if newer else rev
    return UNCOMMITTED


UNCOMMITTED = "an uncommitted version"


def config_line(rs: list[dict]) -> list[str]:
    """Lines for RESULTS.md naming the selfsup runs among ``rs`` that trained an earlier
    version of their config than the one committed now (:func:`config_as_at`), and those
    recorded before records kept a fingerprint (of a version only their date tells); none
    when every run trained today's."""
    older: dict[str, dict[str, str]] = {}
    unknown: set[str] = set()
    for r in rs:
        if r["side"] != "selfsup":
            continue
        if rev := config_as_at(r):
            older.setdefault(rev, {})[r["run"]] = r["config"]
        elif not r.get("config_sha") and not r.get("config_rev"):
            unknown.add(f"{r['run']} ({r['machine'].split(',')[0]})")
    lines = []
    if older:
        parts = [f"{', '.join(sorted(runs))} as at {rev}"
                 + (f" (e.g. `git show {rev}:{next(iter(runs.values()))}`)" if rev != UNCOMMITTED else "")
                 for rev, runs in sorted(older.items())]  # fmt: skip
        lines += [f"Runs of an earlier version of their config than today's (matched by the "
                  f"fingerprint each record keeps): {'; '.join(parts)}.", ""]  # fmt: skip
    if unknown:
        lines += ["Runs recorded before the records kept their config's fingerprint: which "
                  "version of the config they trained only their date tells (the configs "
                  f"committed then): {', '.join(sorted(unknown))}.", ""]  # fmt: skip
    return lines


def _moved(by_seed: dict[int, dict]) -> str:
    """How far the runs' backbone weights moved (recorded since 2026-12-03), seed by seed."""
    moves = [r["moved"] for _, r in sorted(by_seed.items()) if "moved" in r]
    if not moves:
        return "-"
    return " and ".join(f"{m.get('conv_linear', 0) * 100:.2g}, {m.get('norm', 0) * 100:.2g}"
                        for m in moves)  # fmt: skip


def _group_name(group: Group) -> str:
    return f"{group[0]:g} min" + (f", tag `{group[1]}`" if group[1] else "")


def plot_budgets(records: list[dict], reference: Group, groups: list[Group], order: list[str],
                 figure: Path) -> None:  # fmt: skip
    """kNN curves of the runs in ``groups`` (one line style per group), the same runs of
    the reference group faint and dotted, and the baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    colours = _colours(records, order, plt.rcParams["axes.prop_cycle"].by_key()["color"])
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
                label=f"{plot_name(r['run'])} seed {r['seed']} ({_group_name(group)})")  # fmt: skip
    draw_baselines(ax, records)
    # a run with --match-steps may train past its budget: its last point stays in view
    ends = [r["curve"][-1]["minutes"] for r in records if r["side"] != "baseline"
            and r["run"] in shown and group_of(r) in groups]  # fmt: skip
    ax.set_xlim(0, max([g[0] for g in groups] + ends) * 1.05)
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("kNN top-1 on the test split (%)")
    ax.set_title("cifar10_jpeg: other budgets and tags\n(faint dotted: the same runs, "
                 f"{_group_name(reference)}; hollow, own dashes: variants of a config)",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure, dpi=110, bbox_inches="tight")  # long run names: keep the legend whole
    plt.close(fig)


# -- PneumoniaMNIST --------------------------------------------------------------------------
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
        for name in sorted({r["run"] for r in rs}, key=lambda run: (_rank(run, order), run)):
            mine = [r["final"] for r in rs if r["run"] == name]
            rows.append(f"| {name} | {_group_name(group)} | {_finals(mine)} | "
                        f"{_shape([r for r in rs if r['run'] == name])} | "
                        f"{_ips([r for r in rs if r['run'] == name])} |")  # fmt: skip
    for name in sorted({r["method"] for r in base}, key=lambda m: (m != "raw pixels", m)):
        label = ("raw pixels (kNN: per-image mean-centred; probe: logistic regression on "
                 "standardised pixels)") if name == "raw pixels" else name  # fmt: skip
        rows.append(
            f"| baseline: {label} | | {_finals([r['final'] for r in base if r['method'] == name])} | | |"
        )
    exist = sorted({(r["run"], r["seed"], _group_name(group_of(r))) for r in runs})
    listed = ", ".join(f"{run} seed {seed} ({g})" for run, seed, g in exist) or "none"
    machines = {g: _recorded([r for r in runs if group_of(r) == g], "machine") for g in groups}
    if len({m for ms in machines.values() for m in ms}) > 1:
        # groups run on different machines: say which ran where (their speeds differ)
        where = "; ".join(f"{_group_name(g)}: {' / '.join(ms)}" for g, ms in machines.items())
    else:
        where = runs[0]["machine"] if runs else machine
    targets = []
    for group in groups:
        # selfsup is held against lightly within a group only: one machine, one budget
        targets += against_targets([r for r in runs if group_of(r) == group], base, order,
                                   counterparts, _group_name(group))  # fmt: skip
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


LIGHTLY_RANDOM_INIT = "random-init lightly ResNet-18 (3 channels, ImageNet normalisation)"


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
    for name in sorted({r["run"] for r in runs}, key=lambda run: (_rank(run, order), run)):
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


def _finals(finals: list[dict]) -> str:
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
    colours = _colours(records, order, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    columns = sorted({(r["run"], group_of(r)) for r in runs},
                     key=lambda c: (c[1][0], c[1][1] or "", _rank(c[0], order), c[0]))  # fmt: skip
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
            left.text((xs[0] + xs[-1]) / 2, 1.01, _group_name(group).replace("`", ""),
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
                        key=lambda r: (_rank(r["run"], order), r["run"], r["seed"])):  # fmt: skip
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
        ax.set_title(f"{_group_name(group).replace('`', '')}\n{cpus}; selfsup in "
                     f"{', '.join(selfsup)}, lightly in 32-true\nselfsup solid (its @REV and "
                     "[set] variants dotted), lightly dashed",
                     fontsize=8)  # fmt: skip
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle("PneumoniaMNIST (28 px, 1 channel)", fontsize=10)
    fig.savefig(figure, dpi=110, bbox_inches="tight")
    plt.close(fig)
