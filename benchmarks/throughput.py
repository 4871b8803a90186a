"""Training-step throughput: selfsup's step against lightly's recipe, the FLOP floor, the switches.

    .venv/bin/python benchmarks/throughput.py [--precision 32-true bf16-mixed]
        [--rounds 3] [--steps 3] [--only simclr/resnet18 ...] [--no-switches] [--before REV]

For every method x backbone (ResNet-18 with the CIFAR stem, ViT-Tiny with patch 4), 32 px,
batch 64, one pre-built batch of views (drawn once by selfsup's pipeline, so both sides
train on the same tensors):

- selfsup's training step and lightly's recipe (benchmarks/lib/lightly_recipes.py), each a
  LightningModule stepped by a Lightning Trainer (forward, backward, optimizer, EMA
  updates), timed step start to step start; plus the backbone alone with a linear head
  on one view. The three alternate in rounds (``--rounds``; ``--steps`` timed steps each
  after a warm-up step), so machine drift hits all three; medians over all timed steps,
  spread = (max - min) / median of the per-round medians.
- FLOPs of one step (torch.utils.flop_counter, attention counted through the math path)
  for the method and for the backbone-only step: the FLOP floor of the method is the
  backbone-only step time x (method FLOPs / backbone FLOPs).
- The data pipeline (selfsup's DataLoader for that config) in images/s with 0 and 2
  workers, against the model's images/s.
- Switches on selfsup's SimCLR: bf16 autocast, channels_last, torch.compile.
- With ``--before REV``: a fourth side in the rounds, selfsup's step with each config as
  committed at REV (same code, same views), so a config change's cost per step is a
  ratio from one run; written to its own section.

Writes the "Training step" section of benchmarks/results/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from lib.common import CIFAR, REPO, committed_text, machine, spread_percent, write_section
from lib.lightly_recipes import RECIPES
from lib.pipeline import datamodule, images_per_second

BATCH = 64
COMBOS = [
    ("SimCLR", "simclr", "resnet18"),
    ("Triplet", "triplet", "resnet18"),
    ("BYOL", "byol", "resnet18"),
    ("DINO 2+6 crops", "dino", "resnet18"),
    ("SimCLR", "simclr", "vit_tiny"),
    ("Triplet", "triplet", "vit_tiny"),
    ("BYOL", "byol", "vit_tiny"),
    ("DINO 2+6 crops", "dino", "vit_tiny"),
    ("MAE", "mae", "vit_tiny"),
    ("I-JEPA", "ijepa", "vit_tiny"),
]


def config_for(method: str, backbone: str, precision: str, rev: str | None = None) -> Path:
    """The method's CIFAR config (as committed at ``rev``, if given) at batch 64, the run's
    precision, ViTs at patch 4."""
    name = "resnet18_cifar" if backbone == "resnet18" else "vit_tiny_cifar"
    rel = f"configs/{method}/{name}.yaml"
    text = committed_text(rel, rev, "throughput") if rev else (REPO / rel).read_text()
    cfg = yaml.safe_load(text)
    cfg["data"]["batch_size"] = BATCH
    cfg["trainer"]["precision"] = precision
    if backbone == "vit_tiny":
        cfg["model"]["init_args"]["backbone_kwargs"]["patch_size"] = 4
    tag = "-" + re.sub(r"[^A-Za-z0-9._-]", "_", rev) if rev else ""  # origin/main -> a file name
    path = Path(tempfile.gettempdir()) / f"selfsup-bench-{method}-{backbone}{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def first_view(method: str, batch: Any) -> torch.Tensor:
    if method == "ijepa":
        return batch[0][0][0]
    return batch[0][0]


def lightly_batch(method: str, batch: Any) -> Any:
    """selfsup's batch in the format of lightly's recipe (same tensors)."""
    if method != "ijepa":
        return batch
    from lightly.data import IJEPAMaskCollator

    images, labels = batch[0][0][0], batch[0][1]
    collator = IJEPAMaskCollator(
        input_size=32, patch_size=4, pred_mask_scale=(0.15, 0.2), enc_mask_scale=(0.85, 1.0),
        aspect_ratio=(0.75, 1.5), npred=4, min_keep=10,
    )  # fmt: skip
    return collator([(images[i], labels[i]) for i in range(len(images))])


class BackboneStep(pl.LightningModule):
    """The backbone alone with a linear head on one view: the cost every method builds on."""

    def __init__(self, backbone: torch.nn.Module, dim: int, method: str) -> None:
        super().__init__()
        self.backbone, self.head, self.method = backbone, torch.nn.Linear(dim, 10), method

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = first_view(self.method, batch)
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return F.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class _Feed(pl.LightningDataModule):
    """The same batch ``n`` times, ``batch_size`` images each."""

    def __init__(self, batch: Any, n: int) -> None:
        super().__init__()
        self.batch, self.n, self.batch_size = batch, n, BATCH

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(
            [self.batch] * self.n, batch_size=None, collate_fn=lambda b: b
        )


def _math_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """Attention written out, so the FLOP counter sees its matmuls (it does not count
    the fused CPU kernel)."""
    s = q @ k.transpose(-2, -1) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if attn_mask is not None:
        s = (
            s.masked_fill(~attn_mask, float("-inf"))
            if attn_mask.dtype == torch.bool
            else s + attn_mask
        )
    return s.softmax(-1) @ v


class StepTimer(pl.Callback):
    def __init__(self, count_flops_at: int | None = None) -> None:
        self.starts: list[float] = []
        self.count_flops_at, self.flops = count_flops_at, 0
        self._counter: FlopCounterMode | None = None
        self._patch = contextlib.ExitStack()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())
        if batch_idx == self.count_flops_at:
            from unittest import mock

            self._patch.enter_context(
                mock.patch.object(F, "scaled_dot_product_attention", _math_sdpa)
            )
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = self._counter.get_total_flops()
            self._counter = None
            self._patch.close()


def run_steps(module: pl.LightningModule, batch: Any, warmup: int, steps: int, precision: str,
              count_flops: bool = False) -> tuple[list[float], int]:  # fmt: skip
    """Step times (s) of ``steps`` steps after ``warmup``, and one step's FLOPs if asked."""
    n = warmup + steps + 1  # the last step only ends the timing of the one before
    timer = StepTimer(count_flops_at=0 if count_flops else None)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, max_steps=n, precision=precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
        default_root_dir=tempfile.gettempdir(),
    )  # fmt: skip
    trainer.fit(module, datamodule=_Feed(batch, n))
    starts = timer.starts
    return [b - a for a, b in zip(starts[warmup:-1], starts[warmup + 1 :])], timer.flops


def selfsup_module(method: str, backbone: str, precision: str,
                   rev: str | None = None) -> tuple[Any, Any, Path]:  # fmt: skip
    from selfsup.train.run import build_pretrain_cli

    config = config_for(method, backbone, precision, rev)
    cli = build_pretrain_cli(["--config", str(config), "--data.path", str(CIFAR),
                              "--trainer.accelerator", "cpu", "--trainer.logger", "false",
                              "--trainer.default_root_dir", tempfile.gettempdir()])  # fmt: skip
    dm = cli.datamodule
    if hasattr(cli.model, "mask_sampler"):
        from selfsup.masks import MultiBlockMaskCollator

        dm.collate_fn = MultiBlockMaskCollator(cli.model.mask_sampler)
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    return cli.model, batch, config


def measure(combo: tuple[str, str, str], precision: str, rounds: int, steps: int,
            before: str | None = None) -> dict:  # fmt: skip
    name, method, backbone = combo
    model, batch, config = selfsup_module(method, backbone, precision)
    sides = {
        "selfsup": (model, batch),
        "lightly": (RECIPES[method](backbone=backbone, batch_size=BATCH), lightly_batch(method, batch)),
        "backbone": (BackboneStep(model.backbone.__class__(**_backbone_args(model)),
                                  model.backbone.embed_dim, method), batch),
    }  # fmt: skip
    if before:  # the config as it was at that revision, on the same batch of views
        sides["before"] = (selfsup_module(method, backbone, precision, before)[0], batch)
    times: dict[str, list[list[float]]] = {k: [] for k in sides}
    flops: dict[str, int] = {}
    for r in range(rounds):
        for side, (module, b) in sides.items():
            t, f = run_steps(module, b, 2 if r == 0 else 1, steps, precision, count_flops=r == 0)
            times[side].append(t)
            if r == 0:
                flops[side] = f
            print(f"  {name}/{backbone} {side} round {r}: {statistics.median(t):.3f} s/step",
                  file=sys.stderr)  # fmt: skip
    med = {k: statistics.median([x for rnd in v for x in rnd]) for k, v in times.items()}

    def per_round(other: str) -> list[float]:
        return [statistics.median(s) / statistics.median(o)
                for s, o in zip(times["selfsup"], times[other])]  # fmt: skip

    ratio_rounds = per_round("lightly")
    floor = med["backbone"] * flops["selfsup"] / flops["backbone"]
    torch.set_num_threads(1)  # as a DataLoader worker runs
    pipe = {w: images_per_second(datamodule(str(config), str(CIFAR), w), 15) for w in (0, 2)}
    torch.set_num_threads(_THREADS)
    return {
        "name": name, "backbone": backbone, "med": med, "flops": flops,
        "ratio": med["selfsup"] / med["lightly"], "ratio_spread": spread_percent(ratio_rounds),
        "floor_ratio": med["selfsup"] / floor, "pipe": pipe,
        "n_steps": sum(len(t) for t in times["selfsup"]),
        **({"before_ratio": med["selfsup"] / med["before"],
            "before_spread": spread_percent(per_round("before"))} if before else {}),
    }  # fmt: skip


def _backbone_args(model: Any) -> dict:
    kwargs = dict(model.hparams.backbone_kwargs or {})
    return {"name": model.hparams.backbone, **kwargs}


def switches(backbone: str, steps: int, rounds: int) -> list[tuple[str, float, float]]:
    """selfsup SimCLR's step with each switch, alternating with the fp32 default."""
    settings = ["fp32 (default)", "bf16 autocast", "torch.compile", "bf16 + torch.compile"]
    if backbone == "resnet18":  # selfsup's ResNets are channels_last by default
        settings.insert(1, "channels_last off (NCHW)")
    modules = {}
    for s in settings:
        precision = "bf16-mixed" if "bf16" in s else "32-true"
        model, batch, _ = selfsup_module("simclr", backbone, precision)
        if "NCHW" in s:
            model = model.to(memory_format=torch.contiguous_format)
        if "compile" in s:
            model.backbone = torch.compile(model.backbone)
        modules[s] = (model, batch, precision)
    times: dict[str, list[float]] = {s: [] for s in settings}
    for r in range(rounds):
        for s, (model, batch, precision) in modules.items():
            warm = (4 if "compile" in s else 2) if r == 0 else 1
            times[s] += run_steps(model, batch, warm, steps, precision)[0]
            print(f"  switch {backbone} {s} round {r}: {statistics.median(times[s]):.3f} s/step",
                  file=sys.stderr)  # fmt: skip
    base = statistics.median(times[settings[0]])
    return [(s, BATCH / statistics.median(times[s]), base / statistics.median(times[s]))
            for s in settings]  # fmt: skip


_THREADS = torch.get_num_threads()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--only", nargs="*", help="method/backbone pairs, e.g. simclr/resnet18")
    parser.add_argument("--no-switches", action="store_true")
    parser.add_argument("--before", metavar="REV",
                        help="also time each config as committed at REV (a 4th side in the "
                             "rounds) and write the section 'Training step against the "
                             "configs at REV' instead")  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    combos = [c for c in COMBOS if not args.only or f"{c[1]}/{c[2]}" in args.only]
    started = time.time()
    tables = []
    for precision in args.precision:
        extra = f" step / step of the configs at {args.before} (spread %) |" if args.before else ""
        rows = [
            "| method | backbone | selfsup img/s | lightly img/s | selfsup / lightly step "
            "(spread %) | FLOPs: method / backbone step | backbone-only img/s | step / FLOP "
            "floor | pipeline img/s, 0 / 2 workers | pipeline / model (2 workers) |" + extra,
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if extra else ""),
        ]
        for combo in combos:
            m = measure(combo, precision, args.rounds, args.steps, args.before)
            ips = {k: BATCH / v for k, v in m["med"].items()}
            fr = m["flops"]["selfsup"] / m["flops"]["backbone"]
            lf = m["flops"]["lightly"] / m["flops"]["backbone"]
            rows.append(
                f"| {m['name']} | {m['backbone']} | {ips['selfsup']:.1f} | {ips['lightly']:.1f} | "
                f"**{m['ratio']:.2f}** ({m['ratio_spread']:.0f}) | {fr:.2f} (lightly {lf:.2f}) | "
                f"{ips['backbone']:.1f} | **{m['floor_ratio']:.2f}** | "
                f"{m['pipe'][0]:,.0f} / {m['pipe'][2]:,.0f} | {m['pipe'][2] / ips['selfsup']:.1f}x |"
                + (f" **{m['before_ratio']:.2f}** ({m['before_spread']:.0f}) |" if extra else "")
            )
            print(rows[-1], file=sys.stderr)
        tables.append((precision, rows, m["n_steps"]))
    body = [
        f"`benchmarks/throughput.py --precision {' '.join(args.precision)} --rounds "
        f"{args.rounds} --steps {args.steps}`"
        + (f" `--only {' '.join(args.only)}`" if args.only else "")
        + (f" `--before {args.before}`" if args.before else ""),
        "",
        f"{machine()}. Batch 64, 32 px, {torch.get_num_threads()} threads; "
        f"{args.rounds} alternating rounds of selfsup / lightly / backbone-only"
        + (f" / selfsup with the config as committed at {args.before}" if args.before else "")
        + ", "
        f"{args.rounds * args.steps} timed steps each, medians. Took "
        f"{(time.time() - started) / 60:.0f} min.",
        "",
    ]
    for precision, rows, _ in tables:
        body += [f"**{precision}**", "", *rows, ""]
    if not args.no_switches:
        body += ["**Switches** (selfsup SimCLR; speed-up over fp32 in the same rounds)", "",
                 "| backbone | switch | img/s | speed-up |", "|---|---|---|---|"]  # fmt: skip
        for backbone in ("resnet18", "vit_tiny"):
            for s, ips, up in switches(backbone, args.steps, args.rounds):
                body.append(f"| {backbone} | {s} | {ips:.1f} | {up:.2f}x |")
        body.append("")
    heading = (f"Training step against the configs at {args.before} (`throughput --before`)"
               if args.before else "Training step (`throughput`)")  # fmt: skip
    write_section(heading, "\n".join(body))
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
