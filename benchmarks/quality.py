"""Learning per CPU-minute: kNN top-1 after a fixed wall-clock budget, selfsup vs lightly.

    .venv/bin/python benchmarks/quality.py --runs selfsup/simclr lightly/simclr
        [--data cifar|pneumonia] [--budget-min 10] [--seeds 2] [--points 3] [--workers 1]
        [--baselines] [--tag TAG] [--threads N] [--before REV] [--set KEY=VALUE ...]
        [--match-steps] [--eval-backbone student|teacher]
    .venv/bin/python benchmarks/quality.py --render      # table and PNG from the records

Each run pretrains on ../shared/data/cifar10_jpeg.npz (15,000 training images) for
``--budget-min`` minutes of training time, once per seed:

- ``selfsup/METHOD``: selfsup's recommended CIFAR config (``configs/METHOD/*_cifar.yaml``,
  its precision, batch and optimiser) with its schedule compressed into the budget: the
  step count comes from the step time measured on a few calibration steps, and every
  ``*_epochs`` setting (warm-up, teacher-temperature warm-up, frozen last layer) shrinks
  by (epochs in the budget / the config's epochs).
- ``selfsup/METHOD_small``: the short-budget recipe (``configs/METHOD/*_small.yaml``: batch
  64), compressed into the budget the same way.
- ``lightly/METHOD``: lightly's recipe (benchmarks/lib/lightly_recipes.py) as lightly's
  CIFAR-10 benchmark runs it: its transforms (ImageNet normalisation), batch 128, fp32,
  SGD 0.06 with the cosine over the epochs that fit in the budget. MAE and I-JEPA, which
  lightly's CIFAR-10 benchmark lacks, as lightly's examples set them up (batch 256).

Training time excludes the evaluations: at ``--points`` evenly spaced marks the clock
stops, and weighted kNN (k = 20, T = 0.07, cosine; the evaluator of ``selfsup knn``) on
the test split (5,000 images) against the training split's features is measured, in bf16
autocast for every run (fp32 on a CPU without native bf16, where selfsup's configs train
in fp32 too: ``selfsup.precision``; each record keeps the precision it trained in). MAE
and I-JEPA also get the cached-feature linear probe at the end. Each record also keeps how
far the backbone's weights moved from their start (median relative change of the conv
and linear weights, and of the norm layers' scales). ``--baselines`` adds raw
pixels (normalised by the channel means and standard deviations, cosine) and random-init
ResNet-18 (timm's start and torchvision's) and ViT-Tiny/4 backbones, where they are not
recorded yet (``--force``: all again).

Records go to benchmarks/results/quality_runs.json (one entry per run, seed, budget and
``--tag``; existing entries are kept), and every invocation rewrites the "Learning per
CPU-minute" section of benchmarks/results/RESULTS.md and quality_knn.png beside it from
all of them: the 10-minute untagged runs are its main table and figure; runs at other
budgets or with a tag get a table each below it (with the minute their kNN curve reaches
raw pixels') and quality_knn_budgets.png. ``--threads`` sets torch's thread count
(default: torch's own) and is recorded with each run. ``--before REV`` runs selfsup's configs as
committed at git revision REV (with today's code) under the names ``selfsup/METHOD@REV``,
so that a tag's table holds the configs before and after a change, run on one machine;
``--set KEY=VALUE`` changes options of selfsup's runs as ``selfsup pretrain`` would
(``--set model.init_args.lars_clip=false``), recorded as
``selfsup/METHOD[lars_clip=false]``: one factor at a time, beside today's config.
``--match-steps`` gives each such run (``--before``, ``--set`` or both) the step count of
today's config's recorded run (same budget, seed and tag) instead of its own
calibration's. ``--eval-backbone student`` (or ``teacher``) evaluates that backbone of
selfsup's runs rather than the method's own choice (DINO and I-JEPA: the teacher), as
``selfsup probe --backbone`` does, recorded as ``selfsup/dino[backbone=student]``: with
``--match-steps`` the same seed trains the same steps, so the two records differ in the
backbone read and nothing else.
A selfsup record keeps its config's fingerprint (the config's text and ``--set``); a
recorded run whose config has changed since is not rerun under the same tag, and says
so: a new ``--tag`` (or ``--force``) runs the config as it is now.

``--data pneumonia`` runs on PneumoniaMNIST instead (benchmarks/lib/quality_data.py: 1-channel
28 px images, train split pretrained on and used as memory bank, test split as queries).
Every run then reports kNN accuracy and kNN AUROC (the score of an image: the weighted
vote share of class 1) at each mark and the linear probe's accuracy and AUROC at its end.
selfsup's configs get the grayscale overrides (``in_chans`` 1, ``grayscale`` views, mean
0.5, std 0.25, 28 px; the ViTs keep their patch, 4 for MAE: a 7 x 7 grid, 2 for I-JEPA:
14 x 14); lightly's recipes see the images repeated to 3 channels at 28 px, with their
own transforms and ImageNet normalisation. ``--baselines`` there: raw pixels (kNN on
per-image mean-centred pixels, and a logistic regression on standardised pixels) and
random-init 1-channel ResNet-18 (timm's start, and with ``zero_init_last`` false),
ViT-Tiny/4 and ViT-Tiny/2, and lightly's random-init ResNet-18 as lightly's recipes see
the images (3 channels, ImageNet normalisation). Records go to
benchmarks/results/quality_pneumonia_runs.json, the section "Medical images:
PneumoniaMNIST" of RESULTS.md and quality_pneumonia.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch

from lib import common
from lib.common import RESULTS_DIR, machine, write_section
from lib.evaluation import K, T
from lib.methods import METHODS, SMALL
from lib.quality_data import DATASETS
from lib.records import group_of, load_records, record_key, run_name, save_record
from lib.render_cifar import cifar_section
from lib.render_pneumonia import PNEUMONIA_HEADING, pneumonia_section
from lib.runs import baselines, run
from lib.selfsup_side import check_sets, config_fingerprint, config_text, has_teacher

RECORDS = RESULTS_DIR / "quality_runs.json"
PLOT = RESULTS_DIR / "quality_knn.png"
OUTPUTS = {  # data: (records, figure)
    "cifar": (RECORDS, PLOT),
    "pneumonia": (
        RESULTS_DIR / "quality_pneumonia_runs.json",
        RESULTS_DIR / "quality_pneumonia.png",
    ),
}
#: the budget and tag of the main CIFAR table and figure
REFERENCE = (10.0, None)
WANTED_SEEDS = 2  # seeds each run of a 10-minute untagged table should have, whatever --seeds ran


def render(records: list[dict], wanted_seeds: int) -> None:
    # a short-budget recipe joins the main table once it has a run of the main table's group
    ran = {r["method"] for r in records if r["side"] != "baseline" and group_of(r) == REFERENCE}
    methods = {**METHODS, **{m: v for m, v in SMALL.items() if m in ran}}
    body = cifar_section(records, wanted_seeds, methods, REFERENCE, PLOT, K, T, machine())
    write_section("Learning per CPU-minute (`quality`)", body)


def render_pneumonia(records: list[dict], wanted_seeds: int) -> None:
    expected = [f"selfsup/{m}" for m in METHODS]
    expected += [f"lightly/{c}" for c in dict.fromkeys(c for _, c in METHODS.values())]
    order = [m for method in METHODS for m in (method, f"{method}_small")]
    counterparts = {m: lightly for m, (_, lightly) in {**METHODS, **SMALL}.items()}
    body = pneumonia_section(records, wanted_seeds, order, counterparts, expected, PLOT, K, T,
                             machine())  # fmt: skip
    write_section(PNEUMONIA_HEADING, body)


def _pick(values: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` of ``values`` at seeded random positions (the same for a split's x and y)."""
    order = torch.randperm(len(values), generator=torch.Generator().manual_seed(0))
    return values[order[:n].sort().values]


def main() -> int:
    global RECORDS, PLOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="e.g. selfsup/simclr lightly/simclr")
    parser.add_argument("--data", choices=sorted(DATASETS), default="cifar",
                        help="cifar10_jpeg.npz (cifar) or pneumoniamnist.npz (pneumonia)")  # fmt: skip
    parser.add_argument("--budget-min", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--points", type=int, default=3, help="kNN evaluations per run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="add the baselines not yet recorded (with --force: all again)",
    )
    parser.add_argument("--tag", default=None,
                        help="stored in each record: runs with another tag (or none) are kept "
                        "and shown apart, e.g. after-config-fix")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own); recorded")  # fmt: skip
    parser.add_argument("--before", metavar="REV", default=None,
                        help="selfsup's runs take their config as committed at git revision "
                        "REV (e.g. 6ad51ce^, before the config fixes) and are recorded as "
                        "selfsup/METHOD@REV, beside the current configs' runs of the same "
                        "budget and tag: a before/after on one machine")  # fmt: skip
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="sets",
                        help="selfsup's runs with these `selfsup pretrain` options changed "
                        "(e.g. model.init_args.lars_clip=false), recorded as "
                        "selfsup/METHOD[lars_clip=false] beside today's config: one factor "
                        "at a time")  # fmt: skip
    parser.add_argument("--match-steps", action="store_true",
                        help="with --before or --set: each run trains the steps of today's config's "
                        "recorded run of the same budget, seed and tag, rather than the "
                        "count a few calibration steps give (on a shared host their noise "
                        "gave the two sides of a before/after 20-30 %% different step "
                        "counts for the same step time)")  # fmt: skip
    parser.add_argument("--eval-backbone", choices=["student", "teacher"], default=None,
                        help="selfsup's runs are evaluated on this backbone rather than the "
                        "method's own choice (DINO, I-JEPA: teacher), recorded as "
                        "selfsup/dino[backbone=student]; with --match-steps beside the "
                        "method's own run of the same seed and steps")  # fmt: skip
    parser.add_argument("--render", action="store_true", help="only redraw from the records")
    parser.add_argument("--force", action="store_true", help="rerun recorded runs")
    parser.add_argument("--limit-data", type=int, default=0,
                        help="a quick check of the script: N training and N test images "
                        "(a seeded random pick: PneumoniaMNIST's are sorted by class), "
                        "records to --records")  # fmt: skip
    parser.add_argument("--records", type=Path, default=None,
                        help="default: benchmarks/results/quality_runs.json, or "
                        "quality_pneumonia_runs.json with --data pneumonia")  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = DATASETS[args.data]
    RECORDS, PLOT = OUTPUTS[args.data]
    if args.records is not None and args.records != RECORDS:
        # a check run writes beside its records, not to RESULTS.md
        RECORDS, PLOT = args.records, args.records.with_suffix(".png")
        common.RESULTS = args.records.with_suffix(".md")
    known = [f"selfsup/{m}" for m in {**METHODS, **SMALL}] + [f"lightly/{m}" for m in METHODS]
    unknown = [name for name in args.runs if name not in known]
    if unknown:
        print(f"quality: no run named {unknown[0]}; the runs are {' '.join(known)}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.before:  # a revision without a config stops here, before the data loads
        for name in args.runs:
            if name.startswith("selfsup/"):
                config_text(name.split("/")[1], args.before)
    sets: dict[str, str] = {}
    if args.sets and not any(n.startswith("selfsup/") for n in args.runs):
        print("quality: --set changes selfsup's configs, and no selfsup/ run is given: add "
              "one to --runs (lightly's recipes take no --set)", file=sys.stderr)  # fmt: skip
        return 2
    if args.sets:  # a malformed or unknown option stops here, before the data loads
        checked = check_sets(args.sets, [n for n in args.runs if n.startswith("selfsup/")],
                             args.before)  # fmt: skip
        if isinstance(checked, str):
            print(f"quality: {checked}", file=sys.stderr)
            return 2
        sets = checked
    if args.eval_backbone and not any(n.startswith("selfsup/") for n in args.runs):
        print("quality: --eval-backbone picks the backbone selfsup's runs are evaluated on, and "
              "no selfsup/ run is given: add one to --runs (lightly's recipes read their "
              "student)", file=sys.stderr)  # fmt: skip
        return 2
    if args.eval_backbone == "teacher":
        no_teacher = [n for n in args.runs if n.startswith("selfsup/")
                      and not has_teacher(n.split("/")[1], args.before)]  # fmt: skip
        if no_teacher:
            teachers = ", ".join(m for m in sorted(METHODS) if has_teacher(m))
            print(f"quality: {no_teacher[0]} has no teacher to evaluate: --eval-backbone teacher "
                  f"is for {teachers}", file=sys.stderr)  # fmt: skip
            return 2
    tag = args.tag or None
    records = load_records(RECORDS)
    matched: dict[tuple[str, int], int] = {}
    if args.match_steps:  # stops here, before the data loads, when there is nothing to match
        if not (args.before or sets or args.eval_backbone):
            print("quality: --match-steps matches a variant's runs to today's config's: add "
                  "--before REV, --set KEY=VALUE or --eval-backbone", file=sys.stderr)  # fmt: skip
            return 2
        for name in (n for n in args.runs if n.startswith("selfsup/")):
            for seed in range(args.seeds):
                today = [r for r in records if record_key(r) == (name, seed, args.budget_min, tag)]
                if not today:
                    where = f"tag {tag}" if tag else "no tag"
                    print(f"quality: --match-steps: no recorded run of {name} seed {seed} at "
                          f"{args.budget_min:g} min, {where}, to match; run it first "
                          "without --before or --set", file=sys.stderr)  # fmt: skip
                    return 2
                matched[name, seed] = today[0]["steps"]
    show = render if dataset.name == "cifar" else render_pneumonia
    data = dataset.load() if (args.runs or args.baselines) else {}
    if args.limit_data:
        data = {k: _pick(v, args.limit_data) if torch.is_tensor(v) else v for k, v in data.items()}
    if args.baselines:  # the ones not yet recorded; --force: all again
        recorded = set() if args.force else {r["run"] for r in records if r["side"] == "baseline"}
        for record in baselines(data, dataset, recorded):
            save_record(RECORDS, records, record)
            print(record["run"], record["final"], flush=True)
    for seed in range(args.seeds):
        for name in args.runs:
            side, method = name.split("/")
            key = (run_name(side, method, args.before, sets, args.eval_backbone), seed,
                   args.budget_min, tag)  # fmt: skip
            recorded = [r for r in load_records(RECORDS) if record_key(r) == key]
            if recorded and not args.force:
                sha = recorded[0].get("config_sha")
                if (
                    side == "selfsup"
                    and sha
                    and sha != config_fingerprint(method, args.before, sets)
                ):
                    print(f"quality: {key[0]} seed {seed} is recorded from another version of "
                          f"its config (fingerprint {sha}); not rerun: give a new --tag, or "
                          "--force to replace the record", file=sys.stderr)  # fmt: skip
                continue
            record = run(side, method, seed, args.budget_min, args.points, args.workers, data,
                         dataset, tag, args.before, matched.get((name, seed)), sets,
                         args.eval_backbone)  # fmt: skip
            save_record(RECORDS, records, record)
            show(records, WANTED_SEEDS)
    show(load_records(RECORDS), WANTED_SEEDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
