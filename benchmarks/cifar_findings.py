"""Multi-label evaluation on real images: CIFAR classes turned into overlapping findings.

    python benchmarks/cifar_findings.py [--ckpt CKPT | --steps 200] [--out runs/cifar-findings]

The findings of each image of ../shared/data/cifar10_jpeg.npz are 13 columns in {0, 1}:

- ``animal``: bird, cat, deer, dog, frog, horse;
- ``vehicle``: airplane, automobile, ship, truck;
- ``four_legs``: cat, deer, dog, frog, horse (not bird);
- the class itself, one column per class (``is_airplane`` ... ``is_truck``).

So every image has three or two findings at once (a cat: animal, four_legs, is_cat). They
are written to OUT/cifar_findings.npz in selfsup's multi-label layout (``y_*`` N x 13,
``classes`` naming the columns), and ``selfsup knn`` and ``selfsup probe`` evaluate
``--ckpt`` (default: SimCLR pretrained ``--steps`` steps on the same images) on it. The
"Multi-label findings" section of RESULTS.md gets per-finding AUROC and macro AUROC.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lib.common import CIFAR, REPO, machine, write_section
from lib.common import selfsup_json as selfsup

GROUPS = {
    "animal": ("bird", "cat", "deer", "dog", "frog", "horse"),
    "vehicle": ("airplane", "automobile", "ship", "truck"),
    "four_legs": ("cat", "deer", "dog", "frog", "horse"),
}


def findings(labels: np.ndarray, classes: list[str]) -> tuple[np.ndarray, list[str]]:
    """``(N, 3 + C)`` 0/1 findings of class indices ``labels``, and the column names."""
    names = [*GROUPS, *[f"is_{c}" for c in classes]]
    y = np.zeros((len(labels), len(names)), np.uint8)
    for j, members in enumerate(GROUPS.values()):
        y[:, j] = np.isin(np.asarray(classes)[labels], members)
    y[np.arange(len(labels)), len(GROUPS) + labels] = 1
    return y, names


def build(out: Path) -> Path:
    with np.load(CIFAR) as d:
        classes = [str(c) for c in d["classes"]]
        y_train, names = findings(d["y_train"].astype(np.int64), classes)
        y_test, _ = findings(d["y_test"].astype(np.int64), classes)
        path = out / "cifar_findings.npz"
        out.mkdir(parents=True, exist_ok=True)
        np.savez(path, x_train=d["x_train"], y_train=y_train, x_test=d["x_test"],
                 y_test=y_test, classes=np.array(names))  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None, help="evaluate this checkpoint (else pretrain)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default=str(REPO / "runs" / "cifar-findings"))
    args = parser.parse_args()
    out = Path(args.out)
    data = build(out)
    ckpt = args.ckpt
    if ckpt is None:
        run = out / "simclr"
        if not (run / "checkpoints" / "last.ckpt").is_file():
            selfsup("pretrain", "--config", str(REPO / "configs/simclr/resnet18_cifar.yaml"),
                    "--data.path", str(CIFAR), "--data.batch_size", "128",
                    "--trainer.max_steps", str(args.steps), "--trainer.precision", "bf16-mixed",
                    "--knn_monitor.every_n_epochs", "0", "--trainer.default_root_dir", str(run))  # fmt: skip
        ckpt = str(run)
    knn = selfsup("knn", "--ckpt", ckpt, "--data.path", str(data), "--out", str(out / "knn"))
    probe = selfsup("probe", "--ckpt", ckpt, "--data.path", str(data), "--out", str(out / "probe"))
    assert knn is not None and probe is not None
    names = list(probe["auroc"])
    lines = [
        "| finding | test prevalence | kNN AUROC | probe AUROC | probe AP |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        lines.append(f"| {n} | {probe['prevalence']['test'][n]:.3f} | {knn['auroc'][n]:.4f} | "
                     f"{probe['auroc'][n]:.4f} | {probe['average_precision'][n]:.4f} |")  # fmt: skip
    lines.append(f"| **macro AUROC** | | **{knn['macro_auroc']:.4f}** | "
                 f"**{probe['macro_auroc']:.4f}** | mAP {probe['mAP']:.4f} |")  # fmt: skip
    steps = "" if args.ckpt else f" --steps {args.steps}"
    body = (
        f"`python benchmarks/cifar_findings.py{steps}` ({machine()})\n\n"
        f"Checkpoint: {'SimCLR ResNet-18, ' + str(args.steps) + ' steps of batch 128 on the CIFAR subset' if not args.ckpt else ckpt}. "
        "Findings (13 columns): animal, vehicle, four_legs, and the class itself; kNN: k 20, "
        f"T 0.07 vote shares; probe: K logistic heads picked on validation macro AUROC "
        f"(lr {probe['lr']}, wd {probe['weight_decay']}), ECE {probe['calibration_error']:.4f}; "
        f"micro AUROC kNN {knn['micro_auroc']:.4f}, probe {probe['micro_auroc']:.4f}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    write_section("Multi-label findings (`cifar_findings`)", body)
    print(body)


if __name__ == "__main__":
    main()
