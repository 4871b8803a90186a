"""Real chest X-rays through the medical readers: PneumoniaMNIST written out as a DICOM
tree with a labelled manifest (patients are the images here), pretrained from and
probed through the DICOM readers, and probed from the npz with the same seed — the
figures must match, since both paths give the model the same pixels.

    python benchmarks/chest_xray_dicom.py [--steps 200] [--out runs/chest-xray-dicom]

Writes RESULTS lines to stdout (the two probe results side by side).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from lib.dicom_files import write_dicom

REPO = Path(__file__).resolve().parents[1]
PNEUMONIA = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"


def chosen(n: int, limit: int | None) -> np.ndarray:
    """Which images of a split of ``n`` a run uses: all, or a seeded random ``limit``."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def write_dicom_tree(npz: Path, out: Path, limit: int | None = None) -> Path:
    """Every image of the npz's train and test splits as an 8-bit MONOCHROME2 DICOM file
    (Secondary Capture, no window: read back as stored / 255), one folder per split, and
    ``manifest.csv`` (path, label, group, split) beside them; returns the manifest."""
    data = np.load(npz)
    rows = []
    for split in ("train", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        pick = chosen(len(images), limit)
        images, labels = images[pick], labels[pick]
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in range(len(images)):
            name = f"{split}/{i:05d}.dcm"
            write_dicom(out / name, images[i], f"{split}-{i:05d}")
            rows.append(
                {"path": name, "label": int(labels[i]), "group": f"{split}-{i:05d}", "split": split}
            )
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def subset_npz(npz: Path, out: Path, limit: int | None) -> Path:
    """The same images as :func:`write_dicom_tree` writes, in selfsup's npz layout."""
    data = np.load(npz)
    arrays = {}
    for split in ("train", "test"):
        pick = chosen(len(data[f"{split}_images"]), limit)
        arrays[f"x_{split}"] = data[f"{split}_images"][pick]
        arrays[f"y_{split}"] = data[f"{split}_labels"].reshape(-1)[pick]
    np.savez(out, **arrays)
    return out


def selfsup(*args: str) -> dict | None:
    """Run a selfsup command; its JSON line (evaluators), or None (pretraining)."""
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith("selfsup: data")]
    print("\n".join(said), file=sys.stderr)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return json.loads(last) if last.startswith("{") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--limit", type=int, default=None, help="images per split (default all)")
    parser.add_argument("--out", default=str(REPO / "runs" / "chest-xray-dicom"))
    args = parser.parse_args()
    out = Path(args.out)
    manifest = write_dicom_tree(PNEUMONIA, out / "dicom", args.limit)
    npz = subset_npz(PNEUMONIA, out / "pneumonia.npz", args.limit)
    run = out / "simclr"
    selfsup("pretrain", "--config", str(REPO / "configs/simclr/resnet18_cifar.yaml"),
            "--data.path", str(manifest), "--data.channels", "1",
            "--model.init_args.backbone_kwargs", '{"cifar_stem": true, "in_chans": 1}',
            "--data.transform.init_args.size", "28", "--data.transform.init_args.grayscale", "true",
            "--data.transform.init_args.mean", "[0.5]",
            "--data.transform.init_args.std", "[0.25]", "--data.batch_size", "64",
            "--trainer.max_steps", str(args.steps), "--trainer.precision", "bf16-mixed",
            "--knn_monitor.every_n_epochs", "0", "--trainer.default_root_dir", str(run))  # fmt: skip
    results = {}
    for name, data in (("dicom manifest", manifest), ("npz", npz)):
        results[name] = selfsup("probe", "--ckpt", str(run), "--data.path", str(data), "--cache", "false",
                                "--out", str(out / f"probe-{name.split()[0]}"))  # fmt: skip
    for name, r in results.items():
        print(
            f"{name}: top1 {r['top1']:.4f} auroc {r.get('auroc', float('nan')):.4f} "
            f"n_train {r['n_train']} n_val {r['n_val']} n_test {r['n_test']}"
        )


if __name__ == "__main__":
    main()
