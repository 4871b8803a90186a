"""Data pipeline throughput: images/s each method's pretraining DataLoader delivers.

    .venv/bin/python benchmarks/data_pipeline.py [--data ../shared/data/cifar10_jpeg.npz]
        [--batches 30] [--workers 0 2] [--out benchmarks/results/RESULTS.md]

For every method's CIFAR config (32 px, batch 64): the DataLoader of `selfsup pretrain`
(views, and I-JEPA's masks drawn in the workers) iterated from in-memory uint8 images,
timed after its first batch (worker start-up excluded), with 0 and 2 workers, the
settings interleaved, median of 3 repeats. The model side (images/s of a training step)
is the throughput benchmark's; this file measures what feeds it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from lib.common import CIFAR, RESULTS, machine, spread_percent, write_section
from lib.pipeline import datamodule, images_per_second

CONFIGS = {
    "SimCLR": "configs/simclr/resnet18_cifar.yaml",
    "Triplet": "configs/triplet/resnet18_cifar.yaml",
    "BYOL": "configs/byol/resnet18_cifar.yaml",
    "DINO (2+6 crops)": "configs/dino/resnet18_cifar.yaml",
    "MAE": "configs/mae/vit_tiny_cifar.yaml",
    "I-JEPA (+ masks)": "configs/ijepa/vit_tiny_cifar.yaml",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR))
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker runs; the main process's views likewise
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):  # interleaved: drifts in machine load hit every setting
        for name, config in CONFIGS.items():
            for w in args.workers:
                rate = images_per_second(datamodule(config, args.data, w), args.batches)
                rates.setdefault((name, w), []).append(rate)
                print(f"{name:18s} workers={w}: {rate:8.0f} images/s", file=sys.stderr)
    rows = [
        "| method (config) | "
        + " | ".join(f"{w} workers" for w in args.workers)
        + " | spread (min-max, %) |",
        "|---|" + "---|" * (len(args.workers) + 1),
    ]
    for name, config in CONFIGS.items():
        med = [statistics.median(rates[(name, w)]) for w in args.workers]
        spread = max(spread_percent(rates[(name, w)]) for w in args.workers)
        rows.append(f"| {name} (`{config}`) | " + " | ".join(f"{m:,.0f}" for m in med)
                    + f" | {spread:.0f} |")  # fmt: skip
    section = "\n".join([
        f"`benchmarks/data_pipeline.py --batches {args.batches} --repeats {args.repeats}`, "
        f"{machine()}; median of {args.repeats} interleaved repeats after the first batch.",
        "",
        *rows,
        "",
        "The main process is limited to one thread here, as a DataLoader worker is. The",
        "target: at least 5x the training step's images/s (the step benchmark's figure).",
        "",
    ])  # fmt: skip
    write_section("Data pipeline (images/s delivered, 32 px, batch 64)", section, Path(args.out))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
