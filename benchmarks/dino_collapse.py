"""Does a DINO recipe's teacher learn on PneumoniaMNIST, or go uniform? Step by step.

    .venv/bin/python benchmarks/dino_collapse.py --name NAME --config CONFIG
        [--steps 240] [--every 60] [-- OVERRIDES ...]

Pretrains ``CONFIG`` (any DINO config) on ../shared/data/pneumoniamnist.npz with the
1-channel overrides of ``quality.py --data pneumonia`` and its schedule compressed into
``--steps`` optimizer steps (every ``*_epochs`` setting scaled by steps / the config's
steps), then every ``--every`` steps: the window's mean loss, teacher entropy (against
ln K: uniform collapse at ln K) and student-teacher KL, and the kNN AUROC (k = 20,
T = 0.07) of the teacher's and of the student's backbone; at the end both backbones'
cached-feature probe AUROC. Step counts, not minutes, so any machine gives the same
curve. Every run adds (or replaces) its ``--name`` in
benchmarks/results/dino_collapse_runs.json and rewrites the "DINO's teacher on
PneumoniaMNIST" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import warnings
from pathlib import Path

import pytorch_lightning as pl
import yaml

from lib.budget import compress_schedule, cpu_trainer, fit
from lib.common import RESULTS_DIR, machine, write_section
from lib.evaluation import evaluate
from lib.quality_data import DATASETS, GRAY_MEAN, GRAY_STD, selfsup_overrides
from lib.records import load_records, write_records

RECORDS = RESULTS_DIR / "dino_collapse_runs.json"


class Window(pl.Callback):
    """Collapse statistics averaged over each window of ``every`` steps, and kNN at its end."""

    def __init__(self, every: int, data: dict) -> None:
        self.every, self.data, self.stats, self.rows = every, data, [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        s = outputs["collapse_stats"]
        self.stats.append([float(outputs["loss"]), float(s["teacher_entropy"]),
                           float(s["student_teacher_kl"])])  # fmt: skip
        if trainer.global_step % self.every:
            return
        window = self.stats[-self.every :]
        mean = [sum(column) / len(window) for column in zip(*window)]
        row = {"step": trainer.global_step, "loss": mean[0], "teacher_entropy": mean[1],
               "kl": mean[2], **both_backbones(module, self.data)}  # fmt: skip
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def both_backbones(module, data: dict, probe: bool = False) -> dict:
    module.eval()
    out = {}
    for who, fn in (("teacher", module.extract_features), ("student", module.backbone)):
        result = evaluate(fn, data, GRAY_MEAN, GRAY_STD, probe=probe)
        out[f"{who}_knn_auroc"] = result["knn_auroc"]
        if probe:
            out[f"{who}_probe_auroc"] = result["probe_auroc"]
    module.train()
    return out


def run(name: str, config: Path, steps: int, every: int, overrides: list[str]) -> dict:
    from selfsup.train.run import build_pretrain_cli

    dataset = DATASETS["pneumonia"]
    data = dataset.load()
    cfg = yaml.safe_load(config.read_text())
    pl.seed_everything(0, verbose=False)
    argv = ["--config", str(config), "--data.path", str(dataset.path),
            "--data.num_workers", "1", "--trainer.logger", "false", "--seed_everything", "0",
            "--trainer.default_root_dir", tempfile.gettempdir(),
            *selfsup_overrides(cfg, dataset.size), *overrides]  # fmt: skip
    cli = build_pretrain_cli(argv)
    model, batch = cli.model, cfg["data"]["batch_size"]
    compress_schedule(model, steps * batch / len(data["x_train"]) / cfg["trainer"]["max_epochs"])
    window = Window(every, data)
    trainer = cpu_trainer(cfg["trainer"]["precision"], steps, [window])
    fit(trainer, model, cli.datamodule)
    return {
        "name": name, "config": str(config), "overrides": overrides, "steps": steps,
        "batch": batch, "out_dim": model.hparams.out_dim, "rows": window.rows,
        "final": both_backbones(model, data, probe=True), "precision": str(trainer.precision),
        "machine": machine(),
    }  # fmt: skip


def render(records: list[dict]) -> None:
    lines = [
        "`benchmarks/dino_collapse.py --name NAME --config CONFIG [-- OVERRIDES]` (one "
        "record per name). PneumoniaMNIST with `quality --data pneumonia`'s 1-channel "
        "overrides, the schedule compressed into the steps shown, seed 0. Per window of "
        "steps: mean loss, teacher entropy H as a share of ln K (1: the teacher's output "
        "is uniform) and student-teacher KL (nats); kNN AUROC (k = 20) of the teacher's "
        "and the student's backbone at the window's end. Raw pixels: kNN AUROC 0.931.",
        "",
        "| run | step | loss | H / ln K | KL | teacher kNN AUROC | student kNN AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ln_k = math.log(r["out_dim"])
        for row in r["rows"]:
            lines.append(
                f"| {r['name']} | {row['step']} | {row['loss']:.3f} | "
                f"{row['teacher_entropy'] / ln_k:.4f} | {row['kl']:.4f} | "
                f"{row['teacher_knn_auroc']:.3f} | {row['student_knn_auroc']:.3f} |"
            )
    lines += ["", "| run | config, overrides | steps x batch | probe AUROC teacher / student |",
              "|---|---|---|---|"]  # fmt: skip
    for r in records:
        f = r["final"]
        lines.append(
            f"| {r['name']} | `{r['config']}` {' '.join(r['overrides'])} | "
            f"{r['steps']} x {r['batch']} | {f['teacher_probe_auroc']:.3f} / "
            f"{f['student_probe_auroc']:.3f} |"
        )
    lines += ["", "Machines: " + "; ".join(sorted({r["machine"] for r in records})) + "."]
    write_section("DINO's teacher on PneumoniaMNIST (`dino_collapse`)", "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--every", type=int, default=60)
    parser.add_argument("overrides", nargs="*", help="after --: selfsup pretrain overrides")
    args = parser.parse_args()
    if not args.config.is_file():
        parser.error(f"--config {args.config} is not a file: give a DINO config, e.g. "
                     "configs/dino/resnet18_cifar.yaml")  # fmt: skip
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    record = run(args.name, args.config, args.steps, args.every, args.overrides)
    records = load_records(RECORDS)
    records = [r for r in records if r["name"] != args.name] + [record]
    write_records(RECORDS, records)
    render(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
