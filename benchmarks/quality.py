"""Learning per CPU-minute: kNN top-1 after a fixed wall-clock budget, selfsup vs lightly.

    .venv/bin/python benchmarks/quality.py --runs selfsup/simclr lightly/simclr
        [--budget-min 10] [--seeds 2] [--points 3] [--workers 1] [--baselines]
    .venv/bin/python benchmarks/quality.py --render      # table and PNG from the records

Each run pretrains on ../shared/data/cifar10_jpeg.npz (15,000 training images) for
``--budget-min`` minutes of training time, once per seed:

- ``selfsup/METHOD``: selfsup's recommended CIFAR config (``configs/METHOD/*_cifar.yaml``,
  its precision, batch and optimiser) with its schedule compressed into the budget: the
  step count comes from the step time measured on a few calibration steps, and every
  ``*_epochs`` setting (warm-up, teacher-temperature warm-up, frozen last layer) shrinks
  by (epochs in the budget / the config's epochs).
- ``lightly/METHOD``: lightly's recipe (benchmarks/lightly_recipes.py) as lightly's
  CIFAR-10 benchmark runs it: its transforms (ImageNet normalisation), batch 128, fp32,
  SGD 0.06 with the cosine over the epochs that fit in the budget. MAE and I-JEPA, which
  lightly's CIFAR-10 benchmark lacks, as lightly's examples set them up (batch 256).

Training time excludes the evaluations: at ``--points`` evenly spaced marks the clock
stops, and weighted kNN (k = 20, T = 0.07, cosine; the evaluator of ``selfsup knn``) on
the test split (5,000 images) against the training split's features is measured, in bf16
autocast for every run. MAE and I-JEPA also get the cached-feature linear probe at the
end. ``--baselines`` adds raw pixels and a random-init ResNet-18.

Records go to benchmarks/quality_runs.json (one entry per run and seed; existing entries
are kept), and every invocation rewrites the "Learning per CPU-minute" section of
benchmarks/RESULTS.md and benchmarks/quality_knn.png from all of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import CIFAR, REPO, machine, write_section
from lightly_recipes import IMAGENET_MEAN, IMAGENET_STD, RECIPES

RECORDS = REPO / "benchmarks/quality_runs.json"
PLOT = REPO / "benchmarks/quality_knn.png"
METHODS = {  # method: (selfsup config, lightly's counterpart)
    "simclr": ("configs/simclr/resnet18_cifar.yaml", "simclr"),
    "triplet": ("configs/triplet/resnet18_cifar.yaml", "simclr"),
    "byol": ("configs/byol/resnet18_cifar.yaml", "byol"),
    "dino": ("configs/dino/resnet18_cifar.yaml", "dino"),
    "mae": ("configs/mae/vit_tiny_cifar.yaml", "mae"),
    "ijepa": ("configs/ijepa/vit_tiny_cifar.yaml", "ijepa"),
}
PROBED = {"mae", "ijepa"}  # kNN is weak by design on reconstruction / latent prediction
LIGHTLY_BATCH = {"mae": 256, "ijepa": 256}
K, T = 20, 0.07


# -- data and evaluation -------------------------------------------------------------------
def load_cifar(path: Path) -> dict[str, torch.Tensor]:
    with np.load(path) as d:
        return {
            "x_train": torch.from_numpy(d["x_train"]).permute(0, 3, 1, 2).contiguous(),
            "y_train": torch.from_numpy(d["y_train"].astype(np.int64)),
            "x_test": torch.from_numpy(d["x_test"]).permute(0, 3, 1, 2).contiguous(),
            "y_test": torch.from_numpy(d["y_test"].astype(np.int64)),
        }


@torch.no_grad()
def features(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mean, std,
             batch: int = 500) -> torch.Tensor:  # fmt: skip
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = (images[i : i + batch].float() / 255 - mean) / std
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out.append(fn(x).float())
    return torch.cat(out)


def evaluate(fn, data, mean, std, probe: bool = False) -> dict[str, float]:
    from selfsup.knn import knn_top1

    train_f = features(fn, data["x_train"], mean, std)
    test_f = features(fn, data["x_test"], mean, std)
    result = {"knn": knn_top1(train_f, data["y_train"], test_f, data["y_test"], K, T)}
    if probe:
        from selfsup.eval.probe import run_probe

        result["probe"] = run_probe(train_f, data["y_train"], test_f, data["y_test"])["top1"]
    return result


# -- the budget ------------------------------------------------------------------------------
class Budget(pl.Callback):
    """Training clock (evaluations excluded); kNN at the marks; stop at the budget."""

    def __init__(self, budget_s: float, points: int, evaluate_fn) -> None:
        self.budget_s, self.evaluate_fn = budget_s, evaluate_fn
        self.marks = [budget_s * (i + 1) / points for i in range(points - 1)]
        self.curve: list[dict[str, float]] = []
        self.train_s = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.train_s += now - self._t
        if self.marks and self.train_s >= self.marks[0]:
            self.marks.pop(0)
            self.point(trainer, pl_module)
        if self.train_s >= self.budget_s:
            trainer.should_stop = True
        self._t = time.perf_counter()

    def point(self, trainer, pl_module, **extra) -> None:
        was_training = pl_module.training
        pl_module.eval()
        result = self.evaluate_fn(pl_module, **extra)
        pl_module.train(was_training)
        if self.curve and self.curve[-1]["step"] == trainer.global_step:
            self.curve.pop()  # the end fell on a mark: keep the final evaluation only
        self.curve.append({"minutes": self.train_s / 60, "step": trainer.global_step, **result})
        print(f"    {self.train_s / 60:5.2f} min, step {trainer.global_step}: {result}", flush=True)


class StepClock(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def _trainer(precision: str, max_steps: int, callbacks: list) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=max_steps, max_epochs=-1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        default_root_dir=tempfile.gettempdir(),
    )  # fmt: skip


def fit(trainer: pl.Trainer, module: pl.LightningModule, loader: Any) -> None:
    if isinstance(loader, pl.LightningDataModule):
        trainer.fit(module, datamodule=loader)
    else:
        trainer.fit(module, train_dataloaders=loader)


def calibrate(build: Callable[[], tuple[Any, Any, str]], steps: int = 6) -> float:
    """Median step time (s) of the last ``steps - 2`` of ``steps`` steps of a fresh build."""
    module, loader, precision = build()
    clock = StepClock()
    fit(_trainer(precision, steps + 1, [clock]), module, loader)
    gaps = [b - a for a, b in zip(clock.starts[2:-1], clock.starts[3:])]
    return statistics.median(gaps)


# -- the two sides ---------------------------------------------------------------------------
def selfsup_side(method: str, seed: int, workers: int, data: dict) -> dict[str, Any]:
    from selfsup.train.run import build_pretrain_cli

    config = REPO / METHODS[method][0]
    cfg = yaml.safe_load(config.read_text())
    precision, epochs = cfg["trainer"]["precision"], cfg["trainer"]["max_epochs"]
    batch = cfg["data"]["batch_size"]
    transform = cfg["data"]["transform"]["init_args"]

    def build(scale: float = 1.0, max_steps: int | None = None):
        pl.seed_everything(seed, verbose=False)
        argv = ["--config", str(config), "--data.path", str(CIFAR),
                "--data.num_workers", str(workers), "--trainer.logger", "false",
                "--seed_everything", str(seed),
                "--trainer.default_root_dir", tempfile.gettempdir()]  # fmt: skip
        cli = build_pretrain_cli(argv)
        model = cli.model
        for key in list(model.hparams):
            if key.endswith("_epochs") and isinstance(model.hparams[key], (int, float)):
                model.hparams[key] = type(model.hparams[key])(model.hparams[key] * scale)
        return model, cli.datamodule, precision

    return {
        "build": build, "precision": precision, "batch": batch, "config_epochs": epochs,
        "config": str(config.relative_to(REPO)),
        "features": lambda m: m.extract_features,
        "mean": transform["mean"], "std": transform["std"],
    }  # fmt: skip


class _Views(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        image = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        return self.transform(image), int(self.labels[i])


def lightly_transform(method: str):
    from lightly import transforms as lt
    from lightly.transforms.ijepa_transform import IJEPATransform

    if method == "simclr":
        return lt.SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    if method == "byol":
        return lt.BYOLTransform(
            view_1_transform=lt.BYOLView1Transform(input_size=32, gaussian_blur=0.0),
            view_2_transform=lt.BYOLView2Transform(input_size=32, gaussian_blur=0.0),
        )
    if method == "dino":
        return lt.DINOTransform(
            global_crop_size=32, n_local_views=0, cj_strength=0.5, gaussian_blur=(0, 0, 0)
        )
    if method == "mae":
        return lt.MAETransform(input_size=32)
    return IJEPATransform(input_size=32)


def lightly_side(method: str, seed: int, workers: int, data: dict) -> dict[str, Any]:
    recipe = METHODS[method][1]
    batch = LIGHTLY_BATCH.get(recipe, 128)
    backbone = "vit_tiny" if recipe in PROBED else "resnet18"

    def build(scale: float = 1.0, max_steps: int | None = None):
        pl.seed_everything(seed, verbose=False)
        steps_per_epoch = len(data["x_train"]) // batch
        epochs = math.ceil((max_steps or steps_per_epoch) / steps_per_epoch)
        module = RECIPES[recipe](backbone=backbone, batch_size=batch, max_epochs=epochs,
                                 total_steps=max_steps or 1000)  # fmt: skip
        collate = None
        if recipe == "ijepa":
            from lightly.data import IJEPAMaskCollator

            collate = IJEPAMaskCollator(input_size=32, patch_size=4)
        loader = torch.utils.data.DataLoader(
            _Views(data["x_train"], data["y_train"], lightly_transform(recipe)),
            batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
            collate_fn=collate, generator=torch.Generator().manual_seed(seed),
            persistent_workers=workers > 0,
        )  # fmt: skip
        return module, loader, "32-true"

    return {
        "build": build, "precision": "32-true", "batch": batch, "config_epochs": None,
        "config": f"benchmarks/lightly_recipes.py:{RECIPES[recipe].__name__}",
        "features": lambda m: m.features, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    }  # fmt: skip


def run(side: str, method: str, seed: int, budget_min: float, points: int, workers: int,
        data: dict) -> dict[str, Any]:  # fmt: skip
    spec = (selfsup_side if side == "selfsup" else lightly_side)(method, seed, workers, data)
    budget_s = budget_min * 60
    step_s = calibrate(lambda: spec["build"]())
    steps = max(1, int(budget_s / step_s))
    budget_epochs = steps * spec["batch"] / len(data["x_train"])
    scale = budget_epochs / spec["config_epochs"] if spec["config_epochs"] else 1.0
    print(f"  {side}/{method} seed {seed}: {step_s:.2f} s/step -> {steps} steps "
          f"({budget_epochs:.2f} epochs) in {budget_min} min", flush=True)  # fmt: skip
    module, loader, precision = spec["build"](scale, steps)
    probe = method in PROBED

    def evaluate_fn(m, final: bool = False):
        return evaluate(spec["features"](m), data, spec["mean"], spec["std"], probe and final)

    budget = Budget(budget_s, points, evaluate_fn)
    trainer = _trainer(precision, steps, [budget])
    fit(trainer, module, loader)
    budget.point(trainer, module, final=True)
    images_per_s = trainer.global_step * spec["batch"] / budget.train_s
    return {
        "run": f"{side}/{method}", "side": side, "method": method, "seed": seed,
        "budget_min": budget_min, "config": spec["config"], "precision": precision,
        "batch": spec["batch"], "steps": trainer.global_step, "planned_steps": steps,
        "epochs": trainer.global_step * spec["batch"] / len(data["x_train"]),
        "images_per_s": images_per_s, "config_epochs": spec["config_epochs"],
        "curve": budget.curve, "final": budget.curve[-1], "machine": machine(),
    }  # fmt: skip


def baselines(data: dict) -> list[dict[str, Any]]:
    """kNN and probe references: raw pixels, and untrained backbones of the runs' shapes.

    The probe figures are what the MAE / I-JEPA probes are read against: a linear probe
    is stronger than kNN on any features, so those runs' probe needs a probe baseline.
    """
    from selfsup.backbones import Backbone

    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
    out = [{"run": "baseline/raw_pixels", "side": "baseline", "method": "raw pixels", "seed": 0,
            "final": evaluate(lambda x: x.flatten(1), data, mean, std, probe=True)}]  # fmt: skip
    untrained = {  # run: (method, backbone of the runs' shape)
        "random_init_resnet18": ("random-init ResNet-18", dict(name="resnet18", cifar_stem=True)),
        "random_init_vit_tiny4": ("random-init ViT-Tiny/4", dict(name="vit_tiny", patch_size=4, pool="avg")),
    }  # fmt: skip
    for run_name, (method, kwargs) in untrained.items():
        for seed in (0, 1):
            torch.manual_seed(seed)
            net = Backbone(img_size=32, **kwargs).eval()
            out.append({"run": "baseline/" + run_name, "side": "baseline", "method": method,
                        "seed": seed, "final": evaluate(net, data, mean, std, probe=True)})  # fmt: skip
    return out


# -- records, table, plot --------------------------------------------------------------------
def load_records() -> list[dict[str, Any]]:
    return json.loads(RECORDS.read_text()) if RECORDS.is_file() else []


def save_record(records: list[dict], new: dict) -> None:
    key = (new["run"], new["seed"], new.get("budget_min"))
    records[:] = [r for r in records if (r["run"], r["seed"], r.get("budget_min")) != key]
    records.append(new)
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "not yet run"
    sd = f" ± {statistics.stdev(values) * 100:.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values) * 100:.1f}{sd} (n={len(values)})"


def render(records: list[dict], budget_min: float, wanted_seeds: int) -> None:
    runs = [r for r in records if r["side"] != "baseline" and r["budget_min"] == budget_min]
    by = lambda run: [r for r in runs if r["run"] == run]  # noqa: E731
    rows = ["| method | selfsup kNN top-1 % | lightly's recipe kNN top-1 % | selfsup - lightly "
            "(points) | steps x batch (selfsup / lightly) | selfsup img/s | probe % (selfsup / lightly) |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, (_, counterpart) in METHODS.items():
        s, lt = by(f"selfsup/{method}"), by(f"lightly/{counterpart}")
        sk = [r["final"]["knn"] for r in s]
        lk = [r["final"]["knn"] for r in lt]
        diff = f"{(statistics.mean(sk) - statistics.mean(lk)) * 100:+.1f}" if sk and lk else "-"

        def shape(rs: list[dict]) -> str:
            return (
                f"{statistics.mean([r['steps'] for r in rs]):.0f} x {rs[0]['batch']}" if rs else "-"
            )

        ips = f"{statistics.mean([r['images_per_s'] for r in s]):.0f}" if s else "-"
        probes = [r["final"]["probe"] for r in s if "probe" in r["final"]]
        lprobes = [r["final"]["probe"] for r in lt if "probe" in r["final"]]
        probe = f"{_mean_sd(probes)} / {_mean_sd(lprobes)}" if probes or lprobes else "-"
        label = method if counterpart == method else f"{method} (vs lightly {counterpart})"
        rows.append(f"| {label} | {_mean_sd(sk)} | {_mean_sd(lk)} | {diff} | "
                    f"{shape(s)} / {shape(lt)} | {ips} | {probe} |")  # fmt: skip
    base = [r for r in records if r["side"] == "baseline"]
    for name in sorted({r["method"] for r in base}):
        finals = [r["final"] for r in base if r["method"] == name]
        probes = [f["probe"] for f in finals if "probe" in f]
        rows.append(f"| baseline: {name} | {_mean_sd([f['knn'] for f in finals])} | | | | | "
                    f"{_mean_sd(probes) if probes else ''} |")  # fmt: skip
    exist = sorted({(r["run"], r["seed"]) for r in runs})
    listed = ", ".join(f"{run} seed {seed}" for run, seed in exist) or "none"
    missing = [f"{side}/{m if side == 'selfsup' else c}" for m, (_, c) in METHODS.items()
               for side in ("selfsup", "lightly")]  # fmt: skip
    missing = sorted({m for m in missing if len(by(m)) < wanted_seeds})
    full = [
        f"{r['run']}: {r['config_epochs']} epochs x 15,000 images at {r['images_per_s']:.0f} img/s = "
        f"{r['config_epochs'] * 15000 / r['images_per_s'] / 3600:.1f} h "
        f"({r['config_epochs'] * 50000 / r['images_per_s'] / 3600:.0f} h on all 50,000 CIFAR-10 images)"
        for r in {r["run"]: r for r in runs if r["side"] == "selfsup"}.values()
    ]  # fmt: skip
    body = [
        f"`benchmarks/quality.py --budget-min {budget_min:g} --seeds {wanted_seeds}` "
        f"(runs added over sessions; `--render` redraws). Weighted kNN, k = {K}, T = {T}, "
        "on the 5,000 test images against the 15,000 training images of cifar10_jpeg.npz; "
        "mean ± standard deviation over seeds, in %. Machine of the runs: "
        + (runs[0]["machine"] if runs else machine()) + ".",
        "",
        *rows,
        "",
        f"Runs recorded: {listed}.",
        f"Not yet run (fewer than {wanted_seeds} seeds): {', '.join(missing) or 'none'}.",
        "",
        "How long a full run of the config takes here (at the measured training speed):",
        "",
        *[f"- {line}" for line in full],
        "",
        "![kNN top-1 against training minutes](quality_knn.png)",
        "",
    ]  # fmt: skip
    write_section("Learning per CPU-minute (`quality`)", "\n".join(body))
    plot(records, budget_min)


def plot(records: list[dict], budget_min: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    markers = "osD^v"
    for r in records:
        if r["side"] == "baseline" or r["budget_min"] != budget_min:
            continue
        ax.plot([p["minutes"] for p in r["curve"]], [p["knn"] * 100 for p in r["curve"]],
                marker=markers[r["seed"] % len(markers)], color=colours[r["method"]],
                linestyle="-" if r["side"] == "selfsup" else "--",
                label=f"{r['run']} seed {r['seed']}")  # fmt: skip
    baseline_styles = iter([":", "-."])
    for name in sorted({r["method"] for r in records if r["side"] == "baseline"}):
        accs = [r["final"]["knn"] * 100 for r in records if r["method"] == name]
        ax.axhline(statistics.mean(accs), color="grey", linewidth=1,
                   linestyle=next(baseline_styles, ":"), label=f"baseline: {name}")  # fmt: skip
    ax.set_xlim(0, budget_min * 1.05)
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("kNN top-1 on the test split (%)")
    ax.set_title("selfsup (solid) vs lightly's recipes (dashed), cifar10_jpeg")
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1)
    )  # beside the curves, not on them
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main() -> int:
    global RECORDS, PLOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="e.g. selfsup/simclr lightly/simclr")
    parser.add_argument("--budget-min", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--points", type=int, default=3, help="kNN evaluations per run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument("--render", action="store_true", help="only redraw from the records")
    parser.add_argument("--force", action="store_true", help="rerun recorded runs")
    parser.add_argument("--limit-data", type=int, default=0,
                        help="a quick check of the script: N training and N test images, "
                        "records to --records")  # fmt: skip
    parser.add_argument("--records", type=Path, default=RECORDS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.records != RECORDS:  # a check run writes beside its records, not to RESULTS.md
        RECORDS, PLOT = args.records, args.records.with_suffix(".png")
        common.RESULTS = args.records.with_suffix(".md")
    records = load_records()
    data = load_cifar(CIFAR) if (args.runs or args.baselines) else {}
    if args.limit_data:
        data = {k: v[: args.limit_data] for k, v in data.items()}
    if args.baselines:
        for record in baselines(data):
            save_record(records, record)
            print(record["run"], record["final"], flush=True)
    for seed in range(args.seeds):
        for name in args.runs:
            side, method = name.split("/")
            done = {(r["run"], r["seed"], r.get("budget_min")) for r in records}
            if (name, seed, args.budget_min) in done and not args.force:
                continue
            record = run(side, method, seed, args.budget_min, args.points, args.workers, data)
            save_record(records, record)
            render(records, args.budget_min, args.seeds)
    render(records, args.budget_min, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
