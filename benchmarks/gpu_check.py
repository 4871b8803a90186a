"""Every method's config on one CUDA GPU: a few hundred steps in bf16, then `selfsup knn`,
`selfsup probe` and, on DINO's ViT, `selfsup attention`; images/s per method.

    python benchmarks/gpu_check.py --data X.npz --steps 300 --out DIR   # on the GPU machine
    python benchmarks/gpu_check.py --render DIR/gpu_check.json          # RESULTS.md, here

Each run is `selfsup pretrain`'s own build of the config (its callbacks, checkpointing
and precision), with the schedule compressed to the run as benchmarks/quality.py does it
(every ``*_epochs`` value scaled by the run's epochs over the config's), so that warm-up
and the teachers' schedules happen inside the few hundred steps. Images/s is the batch
over the median step time after the first 10 steps (data loading included: the loader's
workers make the views). The runs go first, all of them, then the evaluations, so that a
deadline cuts evaluations rather than methods. Results are written after every stage.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from lib.budget import StepClock, compress_schedule
from lib.common import REPO, RESULTS_DIR, write_section

CONFIGS = [
    "simclr/resnet18_cifar", "triplet/resnet18_cifar", "byol/resnet18_cifar",
    "dino/resnet18_cifar", "mae/vit_tiny_cifar", "ijepa/vit_tiny_cifar", "dino/vit_tiny_cifar",
    "dinov2/vit_tiny_gray64",
]  # fmt: skip
#: Options a config needs on the check's RGB data.
EXTRA = {"dinov2/vit_tiny_gray64": ["--data.channels", "1"]}
ATTENTION = "dino/vit_tiny_cifar"
HEADING = "GPU: every method on one CUDA device (`gpu_check`)"


def device_line() -> str:
    import lightly
    import timm

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        gpu = "no GPU (a check run on the CPU)"
    return (f"{time.strftime('%Y-%m-%d')}, {gpu}, {os.cpu_count()} CPU cores; python "
            f"{platform.python_version()}, torch {torch.__version__}, lightning "
            f"{pl.__version__}, timm {timm.__version__}, lightly {lightly.__version__}")  # fmt: skip


def read_data(path: Path) -> tuple[int, np.ndarray]:
    """selfsup's own reading of the npz -> (training images, four test images); raises
    DataError, before any GPU minute is spent, for a file that knn and probe could not use."""
    from selfsup.data.datasets import DataError, load_npz

    train, test = load_npz(path, "train"), load_npz(path, "test")
    if train.labels is None or test.labels is None:
        raise DataError(
            f"{path} lacks the labels of a split (y_train, y_test): kNN and the probe need both."
        )
    return len(train), test.images[:4]


def pretrain(config: str, data: Path, n_train: int, steps: int, workers: int, run_dir: Path,
             accelerator: str, batch: int | None = None) -> dict:  # fmt: skip
    from selfsup.train.run import build_pretrain_cli

    path = REPO / "configs" / f"{config}.yaml"
    cfg = yaml.safe_load(path.read_text())
    batch, config_epochs = batch or cfg["data"]["batch_size"], cfg["trainer"]["max_epochs"]
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = ["--config", str(path), "--data.path", str(data), "--data.num_workers", str(workers),
            "--trainer.max_steps", str(steps), "--trainer.accelerator", accelerator,
            "--trainer.devices", "1", "--trainer.default_root_dir", str(run_dir),
            "--data.batch_size", str(batch), *EXTRA.get(config, [])]  # fmt: skip
    cli = build_pretrain_cli(argv)
    epochs = steps * batch / n_train
    compress_schedule(cli.model, epochs / config_epochs)
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - start
    gaps = [b - a for a, b in zip(clock.starts[10:], clock.starts[11:])]
    step_s = statistics.median(gaps) if gaps else float("nan")
    return {
        "config": config, "steps": cli.trainer.global_step, "batch": batch,
        "epochs": round(epochs, 2), "precision": str(cli.trainer.precision),
        "step_s": step_s, "images_per_s": batch / step_s, "wall_s": wall,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "run_dir": str(run_dir),
    }  # fmt: skip


def device_augment_rates(device: str, batch: int = 128, rounds: int = 5) -> dict[str, dict]:
    """Images/s of each method's 224 px views made on ``device`` from 256 px uint8 squares
    (``--data.device_augment``), beside the CPU pipeline's on one core."""
    from selfsup.data.device_views import DeviceViews
    from selfsup.transforms import DINOTransform, IJEPATransform, MAETransform, SimCLRTransform

    transforms = {"SimCLR 2x224": SimCLRTransform(224), "DINO 2x224+10x96": DINOTransform(224, 96, 10),
                  "MAE 1x224": MAETransform(224), "I-JEPA 1x224": IJEPATransform(224)}  # fmt: skip
    images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8)
    rates = {}
    for name, transform in transforms.items():
        views, x = DeviceViews(transform), images.to(device)
        for _ in range(2):
            views(x)
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(rounds):
            views(x)
        if device != "cpu":
            torch.cuda.synchronize()
        on_device = rounds * batch / (time.perf_counter() - start)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        for image in images[:16]:
            transform(image)
        cpu_core = 16 / (time.perf_counter() - start)
        torch.set_num_threads(threads)
        rates[name] = {"device": on_device, "cpu_core": cpu_core}
    return rates


def selfsup(*args: str) -> tuple[dict | None, float]:
    """A selfsup command in this process -> (its JSON line or None, seconds). In-process
    rather than common.run_selfsup's subprocess: fourteen evaluations would each import
    torch, Lightning and timm again on a machine whose minutes are counted."""
    from selfsup.cli import main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    seconds = time.perf_counter() - start
    sys.stdout.write(out.getvalue())
    if code:
        raise SystemExit(f"selfsup {args[0]} exited with {code}")
    last = out.getvalue().strip().splitlines()[-1] if out.getvalue().strip() else ""
    return (json.loads(last) if last.startswith("{") else None), seconds


def check(args: argparse.Namespace, n_train: int, test_images: np.ndarray) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "gpu_check.json"
    results = {"device": device_line(), "data": args.data.name, "steps": args.steps,
               "workers": args.workers, "batch_size": args.batch_size, "runs": []}  # fmt: skip
    begin = time.perf_counter()

    def save() -> None:
        results_file.write_text(json.dumps(results, indent=1) + "\n")

    results["device_augment"] = device_augment_rates("cuda" if args.accelerator == "gpu" else "cpu")
    save()

    def late() -> bool:
        return time.perf_counter() - begin > args.deadline_s

    for config in args.configs:
        if late():
            results["runs"].append({"config": config, "skipped": "deadline"})
            continue
        run = pretrain(config, args.data, n_train, args.steps, args.workers,
                       args.runs_dir / config.replace("/", "_"), args.accelerator,
                       args.batch_size)  # fmt: skip
        print(json.dumps(run), flush=True)
        results["runs"].append(run)
        save()
    for task, extra in (("knn", []), ("probe", ["--epochs", str(args.probe_epochs)])):
        for run in results["runs"]:
            if "run_dir" not in run or late():
                continue
            result, seconds = selfsup(task, "--ckpt", run["run_dir"], "--data.path", str(args.data),
                                      *extra)  # fmt: skip
            run[task] = result["top1"] if result else None
            run[f"{task}_s"] = seconds
            save()
    run = next((r for r in results["runs"] if r["config"] == ATTENTION and "run_dir" in r), None)
    if run is not None and not late():
        from PIL import Image

        folder = args.runs_dir / "images"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, image in enumerate(test_images):
            paths.append(str(folder / f"test_{i}.png"))
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(paths[-1])
        maps = args.runs_dir / "attention"
        _, seconds = selfsup("attention", "--ckpt", run["run_dir"], "--image", *paths,
                             "--out", str(maps))  # fmt: skip
        run["attention_s"] = seconds
        shutil.copy(maps / "overview.png", args.out / "attention_overview.png")
        save()
    results["total_s"] = time.perf_counter() - begin
    save()


def render(results_file: Path) -> None:
    results = json.loads(results_file.read_text())
    rows = ["| config | steps x batch | precision | img/s | step ms | run s | peak GPU GiB | "
            "kNN top-1 % | probe top-1 % | kNN s | probe s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in results["runs"]:
        if "skipped" in r:
            rows.append(f"| `{r['config']}` | skipped ({r['skipped']}) | | | | | | | | | |")
            continue
        rows.append(f"| `{r['config']}` | {r['steps']} x {r['batch']} | {r['precision']} | "
                    f"{r['images_per_s']:,.0f} | {1000 * r['step_s']:.1f} | {r['wall_s']:.0f} | "
                    f"{num(r['peak_gib'], 1)} | {pct(r.get('knn'))} | {pct(r.get('probe'))} | "
                    f"{num(r.get('knn_s'))} | {num(r.get('probe_s'))} |")  # fmt: skip
    augment = results.get("device_augment") or {}
    if augment:
        rows += ["", "Views made on the device from 256 px uint8 squares (`--data.device_augment true`), "
                 "batch 128, against the CPU pipeline on one core:", "",
                 "| views | device images/s | one CPU core images/s | cores the device replaces |",
                 "|---|---|---|---|"]  # fmt: skip
        for name, r in augment.items():
            rows.append(
                f"| {name} | {r['device']:,.0f} | {r['cpu_core']:,.1f} | {r['device'] / r['cpu_core']:,.0f} |"
            )
    figure = results_file.parent / "attention_overview.png"
    body = [
        f"`benchmarks/gpu_check.py --data {results['data']} --steps {results['steps']} "
        f"--workers {results['workers']}"
        + (f" --batch-size {results['batch_size']}" if results.get("batch_size") else "")
        + f"` on {results['device']}. Each config of "
        "`configs/*/*_cifar.yaml` as `selfsup pretrain` builds it (bf16-mixed on CUDA), "
        f"{results['steps']} steps with its schedule compressed to them; then `selfsup knn` "
        "and `selfsup probe` (test split) on its checkpoint. img/s: batch over the median "
        "step time after step 10, data loading included. The whole check took "
        f"{results.get('total_s', 0) / 60:.1f} min.",
        "",
        *rows,
        "",
    ]
    if figure.is_file():
        shutil.copy(figure, RESULTS_DIR / "gpu_attention.png")
        body += ["`selfsup attention` on the DINO ViT-Tiny run, four test images:", "",
                 "![DINO ViT-Tiny attention after the GPU check](gpu_attention.png)", ""]  # fmt: skip
    write_section(HEADING, "\n".join(body))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an npz of selfsup's format (CIFAR-like, 32 px)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=12, help="DataLoader workers of a run")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per-step batch (default: each config's)")  # fmt: skip
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--accelerator", default="gpu", help="cpu: a check of the script")
    parser.add_argument("--deadline-s", type=float, default=420.0,
                        help="start no stage after this many seconds")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/selfsup_gpu_check"))
    parser.add_argument("--render", type=Path, metavar="JSON", help="only write RESULTS.md")
    args = parser.parse_args()
    if args.render:
        render(args.render)
        return 0
    if args.data is None or not args.data.is_file():
        print(f"gpu_check: --data {args.data}: no such npz", file=sys.stderr)
        return 2
    from selfsup.data.datasets import DataError

    try:
        n_train, test_images = read_data(args.data)
    except DataError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; --accelerator cpu checks the script", file=sys.stderr
        )
        return 2
    check(args, n_train, test_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
