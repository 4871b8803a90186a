"""Variants of a config in the quality tables: which version of its config a run trained
(matched by the fingerprint its record keeps, along the config's git history), and each
variant (``@REV``, ``[key=value]``) against the run it differs from by one change."""

from __future__ import annotations

import functools
import json
import statistics
import subprocess

from .common import REPO
from .records import fingerprint, variant_of
from .render import mean_sd, rank, steps_x_batch


def before_after(rs: list[dict], order: list[str]) -> list[str]:
    """Lines for RESULTS.md: each run of a variant (a config as committed at a revision,
    ``selfsup/simclr@REV``, or with options set, ``selfsup/simclr[lars_clip=false]``)
    against the run of the same group it differs from by one change (``partner``), seed by
    seed; the difference is taken over the seeds both have run. No lines when the group
    has no pair."""
    names = {r["run"] for r in rs}
    pairs = sorted({(after, run) for run in names if (after := partner(run, names))},
                   key=lambda pair: (rank(pair[1], order), pair[1]))  # fmt: skip
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
        shapes = f"{steps_x_batch(list(new.values()))} / {steps_x_batch(list(old.values()))}"
        lines.append(f"| {before} | {after} | {mean_sd([r['final']['knn'] for r in new.values()])} | "
                     f"{mean_sd([r['final']['knn'] for r in old.values()])} | {delta} | "
                     f"{shapes} | against {moved(new)}; variant {moved(old)} |")  # fmt: skip
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


def moved(by_seed: dict[int, dict]) -> str:
    """How far the runs' backbone weights moved (recorded since 2026-12-03), seed by seed."""
    moves = [r["moved"] for _, r in sorted(by_seed.items()) if "moved" in r]
    if not moves:
        return "-"
    return " and ".join(f"{m.get('conv_linear', 0) * 100:.2g}, {m.get('norm', 0) * 100:.2g}"
                        for m in moves)  # fmt: skip
