"""Shards against the DICOM tree they were packed from: the same pretraining, and the read
speed per core.

    python benchmarks/shards.py [--steps 200] [--seeds 0 1] [--out runs/shards]
    python benchmarks/shards.py --speed_only      # the reading speed alone (an idle machine;
                                                  # a later run keeps it)

PneumoniaMNIST written as a DICOM tree with a manifest (``chest_xray_dicom.py``'s writer:
2428 + 468 8-bit MONOCHROME2 files), packed with ``selfsup data pack``. SimCLR (ResNet-18,
CIFAR stem, 28 px, gray) pretrains from the tree and from the shards with the same seeds,
then ``selfsup probe`` gives each one's test AUROC on the npz: the two sources must agree
within the spread between seeds. Reading: every training sample through selfsup's dataset
for each source (what a DataLoader worker does before the views), one thread, timed after
a first pass (so both read from the page cache), median of 3 passes; the ratio is per core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from chest_xray_dicom import PNEUMONIA, subset_npz, write_dicom_tree
from lib.common import REPO, RESULTS_DIR, machine, run_selfsup, write_section

RECORDS = RESULTS_DIR / "shards_runs.json"


def prepare(out: Path) -> tuple[Path, Path, Path]:
    """The DICOM tree's manifest, its shards and the npz (made once)."""
    manifest = out / "dicom" / "manifest.csv"
    if not manifest.is_file():
        write_dicom_tree(PNEUMONIA, out / "dicom")
    shards = out / "shards"
    if not (shards / "selfsup.json").is_file():
        run_selfsup("data", "pack", "--data.path", str(manifest), "--out", str(shards))
    npz = out / "pneumonia.npz"
    if not npz.is_file():
        subset_npz(PNEUMONIA, npz, None)
    return manifest, shards, npz


def read_speed(path: Path, passes: int = 3) -> dict:
    """Training samples per second through selfsup's dataset, one thread."""
    from selfsup.data.datasets import open_dataset

    torch.set_num_threads(1)
    ds = open_dataset(str(path), "train")
    for i in range(len(ds)):  # the first pass: files into the page cache, shards opened
        ds[i]
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        rates.append(len(ds) / (time.perf_counter() - start))
    return {"samples": len(ds), "per_second": statistics.median(rates), "passes": rates}


def pretrain_and_probe(data: Path, npz: Path, seed: int, steps: int, run: Path) -> dict:
    if not (run / "checkpoints" / "last.ckpt").is_file():
        run_selfsup(
            "pretrain", "--config", str(REPO / "configs/simclr/resnet18_cifar.yaml"),
            "--data.path", str(data), "--data.channels", "1",
            "--model.init_args.backbone_kwargs", '{"cifar_stem": true, "in_chans": 1}',
            "--data.transform.init_args.size", "28", "--data.transform.init_args.grayscale", "true",
            "--data.transform.init_args.mean", "[0.5]", "--data.transform.init_args.std", "[0.25]",
            "--data.batch_size", "64", "--trainer.max_steps", str(steps), "--seed_everything", str(seed),
            "--trainer.precision", "bf16-mixed", "--knn_monitor.every_n_epochs", "0",
            "--pictures.every_n_epochs", "0", "--data.num_workers", "1",
            "--trainer.default_root_dir", str(run), "--resume", "never",
        )  # fmt: skip
    result, _ = run_selfsup("probe", "--ckpt", str(run), "--data.path", str(npz), "--cache", "false",
                            "--data.num_workers", "1")  # fmt: skip
    return {"auroc": result["auroc"], "top1": result["top1"]}


def weights_diff(out: Path, seeds: list[int]) -> dict[str, float]:
    """Per seed run from both sources: the largest difference between their final weights."""
    diffs = {}
    for seed in seeds:
        ckpts = [
            out / f"simclr-{name}-s{seed}" / "checkpoints" / "last.ckpt"
            for name in ("tree", "shards")
        ]
        if all(c.is_file() for c in ckpts):
            a, b = (
                torch.load(c, map_location="cpu", weights_only=True)["state_dict"] for c in ckpts
            )
            diffs[str(seed)] = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "shards")
    parser.add_argument("--speed_only", action="store_true")
    parser.add_argument("--render_only", action="store_true", help="RESULTS.md from the records")
    args = parser.parse_args()
    if args.render_only:
        records = json.loads(RECORDS.read_text())
        records["weights_max_diff"] = weights_diff(args.out, records["seeds"])
        write_section("Shards against the DICOM tree (`shards`)", render(records))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    manifest, shards, npz = prepare(args.out)
    records = json.loads(RECORDS.read_text()) if RECORDS.is_file() else {}
    records.update(machine=machine(), steps=args.steps, seeds=args.seeds)
    if args.speed_only or "speed" not in records:  # timed alone: --speed_only on an idle machine
        records["speed"] = {"tree": read_speed(manifest), "shards": read_speed(shards)}
    print(records["speed"], flush=True)
    if not args.speed_only:
        runs = {}
        for seed in args.seeds:
            for name, data in (("tree", manifest), ("shards", shards)):
                runs[f"{name}-s{seed}"] = pretrain_and_probe(data, npz, seed, args.steps,
                                                             args.out / f"simclr-{name}-s{seed}")  # fmt: skip
                print(name, seed, runs[f"{name}-s{seed}"], flush=True)
        records["runs"] = runs
    records["weights_max_diff"] = weights_diff(args.out, args.seeds)
    RECORDS.write_text(json.dumps(records, indent=1))
    write_section("Shards against the DICOM tree (`shards`)", render(records))


def render(records: dict) -> str:
    speed, runs, seeds = records["speed"], records.get("runs", {}), records["seeds"]
    tree, shards = speed["tree"]["per_second"], speed["shards"]["per_second"]
    rows = ["| source | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds)]  # fmt: skip
    for name in ("tree", "shards"):
        cells = [
            f"{runs[f'{name}-s{s}']['auroc']:.4f}" if f"{name}-s{s}" in runs else "not run"
            for s in seeds
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"""Machine: {records["machine"]}.

    python benchmarks/shards.py --steps {records["steps"]} --seeds {" ".join(map(str, seeds))}

PneumoniaMNIST as a DICOM tree (8-bit MONOCHROME2 files, a manifest; {speed["tree"]["samples"]}
training images) and the same tree packed with `selfsup data pack`.

**Reading, one core** (selfsup's dataset, every training sample, from the page cache, median
of 3 passes): tree {tree:,.0f} samples/s, shards {shards:,.0f} samples/s: shards are read
**{shards / tree:.1f}x** faster per core.

**SimCLR** (ResNet-18, CIFAR stem, 28 px, gray, batch 64, {records["steps"]} steps, bf16) pretrained
from each source with the same seed, probe AUROC on the PneumoniaMNIST test split:

{chr(10).join(rows)}

Largest difference between the final weights of the tree's and the shards' run, per seed:
{", ".join(f"seed {k}: {v:.1e}" for k, v in records.get("weights_max_diff", {}).items()) or "none compared"}.
"""


if __name__ == "__main__":
    main()
