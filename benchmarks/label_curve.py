"""Label efficiency on real chest X-rays: a pretrained encoder against its random init.

    python benchmarks/label_curve.py [--steps 300] [--seeds 3] [--out runs/label-curve]

SimCLR (configs/simclr/resnet18_cifar.yaml, read as 1 channel at 28 px) pretrains on
../shared/data/pneumoniamnist.npz for ``--steps`` steps. The random-init checkpoint is the
same method and architecture built afresh from the run's own hyperparameters (seed 0), with
the run's metadata (normalisation, image size), so the two differ in their weights only.
Both go through

    selfsup probe --ckpt CKPT --data.path pneumoniamnist.npz --label_fraction [0.01,0.1,1.0]
        --label_seeds 3

and ``selfsup summary`` draws both curves in one PNG (benchmarks/results/label_curve.png).
The "Label efficiency" section of RESULTS.md gets the table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from lib.common import PNEUMONIA, REPO, RESULTS_DIR, machine, random_init_checkpoint, write_section
from lib.common import selfsup_json as selfsup

PLOT = RESULTS_DIR / "label_curve.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--out", default=str(REPO / "runs" / "label-curve"))
    args = parser.parse_args()
    out = Path(args.out)
    run = out / "simclr"
    if not (run / "checkpoints" / "last.ckpt").is_file():
        selfsup("pretrain", "--config", str(REPO / "configs/simclr/resnet18_cifar.yaml"),
                "--data.path", str(PNEUMONIA), "--data.channels", "1",
                "--model.init_args.backbone_kwargs", '{"cifar_stem": true, "in_chans": 1}',
                "--data.transform.init_args.size", "28",
                "--data.transform.init_args.grayscale", "true",
                "--data.transform.init_args.mean", "[0.5]",
                "--data.transform.init_args.std", "[0.25]", "--data.batch_size", "64",
                "--trainer.max_steps", str(args.steps), "--trainer.precision", "bf16-mixed",
                "--knn_monitor.every_n_epochs", "0", "--trainer.default_root_dir", str(run))  # fmt: skip
    trained = run / "checkpoints" / "last.ckpt"
    rand = random_init_checkpoint(trained, out / "random-init" / "random_init.ckpt")
    fractions = [str(f) for f in args.fractions]
    dirs = []
    for name, ckpt in (("simclr", trained), ("random-init", rand)):
        d = out / "curves" / name
        selfsup("probe", "--ckpt", str(ckpt), "--data.path", str(PNEUMONIA), "--out", str(d),
                "--label_fraction", f"[{','.join(fractions)}]", "--label_seeds", str(args.seeds))  # fmt: skip
        dirs.append(d)
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", "summary", *map(str, dirs),
                           "--out", str(out / "curves" / "summary.csv"), "--curve_metric", "auroc"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    shutil.copy(out / "curves" / "label_curves.png", PLOT)
    tables = proc.stdout.split("\n\n", 1)[1].rsplit("\n\ncurves:", 1)[0]
    command = (f"python benchmarks/label_curve.py --steps {args.steps} --seeds {args.seeds} "
               f"--fractions {' '.join(fractions)}")  # fmt: skip
    body = (
        f"`{command}` ({machine()})\n\n"
        f"SimCLR pretrained {args.steps} steps on PneumoniaMNIST (1 channel, 28 px, batch 64, "
        "bf16) against the same ResNet-18 at random init; `selfsup probe --label_fraction "
        f"[{','.join(fractions)}] --label_seeds {args.seeds}` on each, then `selfsup summary "
        "--curve_metric auroc` of both: test top-1 (the probe's headline, picked on "
        "validation top-1) and AUROC, mean ± std over the seeds' nested label subsets (the "
        "validation split is fixed). The figure shows AUROC.\n\n"
        f"{tables.strip()}\n\n![label curves](label_curve.png)\n"
    )
    write_section("Label efficiency (`label_curve`)", body)
    print(body)


if __name__ == "__main__":
    main()
