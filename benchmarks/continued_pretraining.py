"""Continued pretraining from exported weights: CIFAR SimCLR -> timm hub export -> DINO on
chest X-rays (1 channel, 28 px), with the adaptations, the step-0 kNN and a frozen epoch.

    python benchmarks/continued_pretraining.py [--simclr-steps 300] [--dino-steps 150]

1. SimCLR ViT-Tiny/4 (configs/simclr/vit_tiny_cifar.yaml) pretrains on the CIFAR subset.
2. ``selfsup export --format timm-hub`` writes it; a Python process that imports only timm
   and torch loads it with ``timm.create_model("local-dir:DIR", pretrained=True)`` and its
   features are compared with the backbone ``selfsup knn`` evaluates.
3. ``selfsup knn`` of the SimCLR run on ../shared/data/pneumoniamnist.npz (the export's own
   input: 32 px, gray repeated to RGB, its normalisation).
4. DINO (configs/dino/vit_tiny_cifar.yaml at 1 channel, 28 px) starts from the hub
   directory with ``freeze_backbone_epochs 1``: the run's summary lines (adaptations), its
   kNN monitor at step 0 and at every epoch end; after epoch 0 its checkpoint's backbone is
   compared with the starting weights (frozen), and again at the end (trained).

The "Continued pretraining" section of RESULTS.md gets the figures.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import torch

from lib.common import CIFAR, PNEUMONIA, REPO, machine, write_section
from lib.common import run_selfsup as selfsup

ONLY_TIMM = """
import sys, timm, torch
assert "selfsup" not in sys.modules
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])), sys.argv[3])
"""


def backbone_state(run: Path, which: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    prefix = f"{which}.model."
    return {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simclr-steps", type=int, default=300)
    parser.add_argument("--dino-steps", type=int, default=150)
    parser.add_argument("--out", default=str(REPO / "runs" / "continued"))
    args = parser.parse_args()
    out = Path(args.out)
    simclr, hub, dino = out / "simclr-cifar", out / "hub", out / "dino-pneumonia"
    if not (simclr / "checkpoints" / "last.ckpt").is_file():
        selfsup("pretrain", "--config", str(REPO / "configs/simclr/vit_tiny_cifar.yaml"),
                "--data.path", str(CIFAR), "--data.batch_size", "128",
                "--trainer.max_steps", str(args.simclr_steps), "--knn_monitor.every_n_epochs", "0",
                "--pictures.every_n_epochs", "0", "--trainer.default_root_dir", str(simclr))  # fmt: skip
    selfsup("export", "--ckpt", str(simclr), "--out", str(hub), "--format", "timm-hub")

    # timm alone, against the backbone selfsup evaluates.
    from selfsup.checkpoints import load_backbone

    x = torch.randn(8, 3, 32, 32)
    torch.save(x, out / "x.pt")
    subprocess.run([sys.executable, "-c", ONLY_TIMM, str(hub), str(out / "x.pt"), str(out / "y.pt")],
                   check=True)  # fmt: skip
    with torch.no_grad():
        ours = load_backbone(simclr).backbone(x)
    timm_diff = float((torch.load(out / "y.pt") - ours).abs().max())

    export_knn, _ = selfsup("knn", "--ckpt", str(simclr), "--data.path", str(PNEUMONIA), "--k", "[20]",
                            "--out", str(out / "knn-export"))  # fmt: skip
    common = ["--config", str(REPO / "configs/dino/vit_tiny_cifar.yaml"), "--data.path", str(PNEUMONIA),
              "--data.channels", "1", "--data.batch_size", "64", "--model.init_args.backbone_kwargs",
              '{"img_size": 28, "patch_size": 4, "in_chans": 1, "drop_path_rate": 0.1}',
              "--data.transform.init_args.size", "28", "--data.transform.init_args.local_size", "12",
              "--data.transform.init_args.n_local", "2", "--data.transform.init_args.grayscale", "true",
              "--data.transform.init_args.mean", "[0.5]", "--data.transform.init_args.std", "[0.25]",
              "--model.init_args.init_from", str(hub), "--model.init_args.freeze_backbone_epochs", "1",
              "--model.init_args.warmup_epochs", "1", "--model.init_args.warmup_teacher_temp_epochs", "1",
              "--model.init_args.out_dim", "1024", "--knn_monitor.every_n_epochs", "1",
              "--pictures.every_n_epochs", "0", "--trainer.default_root_dir", str(dino)]  # fmt: skip
    _, said = selfsup("pretrain", *common, "--trainer.max_epochs", "1")
    init_lines = [ln for ln in said.splitlines() if ln.startswith("selfsup: init ")]
    from safetensors.torch import load_file

    from selfsup.checkpoints.adapt import adapt_state_dict
    from selfsup.methods import DINO

    target = DINO(
        backbone="vit_tiny", backbone_kwargs={"img_size": 28, "patch_size": 4, "in_chans": 1}
    )
    start = adapt_state_dict(load_file(str(hub / "model.safetensors")), target.backbone.model).state
    epoch0 = backbone_state(dino, "backbone")
    frozen = all(torch.equal(epoch0[k], v) for k, v in start.items())
    selfsup(
        "pretrain",
        *common,
        "--trainer.max_steps",
        str(args.dino_steps),
        "--trainer.max_epochs",
        "100",
    )
    end = backbone_state(dino, "backbone")
    moved = max(float((end[k] - v).abs().max()) for k, v in start.items())
    with open(dino / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    init = next(float(r["val/knn_top1_init"]) for r in rows if r.get("val/knn_top1_init"))
    curve = [(int(r["step"]), float(r["val/knn_top1"])) for r in rows if r.get("val/knn_top1")]
    final_knn, _ = selfsup(
        "knn", "--ckpt", str(dino), "--data.path", str(PNEUMONIA), "--out", str(out / "knn-dino")
    )

    lines = "\n".join(f"    {ln}" for ln in init_lines)
    body = (
        f"`python benchmarks/continued_pretraining.py --simclr-steps {args.simclr_steps} "
        f"--dino-steps {args.dino_steps}` ({machine()})\n\n"
        f"SimCLR ViT-Tiny/4 pretrained {args.simclr_steps} steps (batch 128) on the CIFAR subset, "
        "exported with `selfsup export --format timm-hub`; DINO continues from that directory on "
        "PneumoniaMNIST at 1 channel and 28 px with `freeze_backbone_epochs 1` (2 global + 2 local "
        f"crops, batch 64, {args.dino_steps} steps). The run's summary:\n\n{lines}\n\n"
        f'- timm alone (`timm.create_model("local-dir:DIR", pretrained=True)`, selfsup not imported) '
        f"against the backbone `selfsup knn` evaluates: max |difference| {timm_diff:.2e}.\n"
        f"- `selfsup knn` of the exported backbone on PneumoniaMNIST (its own input: 32 px, gray "
        f"repeated to RGB): top-1 {export_knn['top1']:.4f}, AUROC {export_knn['auroc']:.4f}.\n"
        f"- DINO's kNN monitor at step 0 (the adapted weights: 28 px, summed kernels): top-1 "
        f"{init:.4f}; at the epoch ends: {', '.join(f'step {s} {v:.4f}' for s, v in curve)}.\n"
        f"- After epoch 0 (frozen) the backbone equals its starting weights: {frozen}; at the end "
        f"it has moved by up to {moved:.3g}.\n"
        f"- `selfsup knn` of the final DINO run (teacher): top-1 {final_knn['top1']:.4f}, AUROC "
        f"{final_knn['auroc']:.4f}.\n"
    )
    write_section("Continued pretraining (`continued_pretraining`)", body)
    print(body)


if __name__ == "__main__":
    main()
