"""One run of the quality study (selfsup's config or lightly's recipe, trained for a budget
of minutes, evaluated at its marks) as a record, and the baselines' records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from . import lightly_side, selfsup_side
from .budget import Budget, calibrate, cpu_trainer, fit
from .common import machine
from .evaluation import evaluate
from .lightly_recipes import IMAGENET_MEAN, IMAGENET_STD
from .lightly_recipes import resnet18 as lightly_resnet18
from .methods import PROBED
from .quality_data import (
    LIGHTLY_RANDOM_INIT,
    QualityData,
    pneumonia_baselines,
    untrained_variants,
    with_data_bn_stats,
)
from .records import run_name


def run(side: str, method: str, seed: int, budget_min: float, points: int, workers: int,
        data: dict, dataset: QualityData, tag: str | None = None,
        rev: str | None = None, matched_steps: int | None = None,
        sets: dict[str, str] | None = None,
        eval_backbone: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One run; ``matched_steps`` trains exactly that many steps (the budget's clock then
    places the marks but does not stop the run) instead of the calibrated count."""
    if side == "selfsup":
        # taken before training: the config as it was when the run read it
        fingerprint = {"config_sha": selfsup_side.config_fingerprint(method, rev, sets)}
        spec = selfsup_side.spec(method, seed, workers, data, dataset, rev, sets, eval_backbone)
    else:
        fingerprint, spec = {}, lightly_side.spec(method, seed, workers, data, dataset)
    budget_s = budget_min * 60
    if matched_steps:
        steps, how = matched_steps, "matched to today's config's run"
    else:
        step_s = calibrate(lambda: spec["build"]())
        steps, how = max(1, int(budget_s / step_s)), f"{step_s:.2f} s/step"
    budget_epochs = steps * spec["batch"] / len(data["x_train"])
    scale = budget_epochs / spec["config_epochs"] if spec["config_epochs"] else 1.0
    name = run_name(side, method, rev, sets, eval_backbone if side == "selfsup" else None)
    print(f"  {name} seed {seed}: {how} -> {steps} steps "
          f"({budget_epochs:.2f} epochs) in {budget_min} min", flush=True)  # fmt: skip
    module, loader, precision = spec["build"](scale, steps)
    probe = method in PROBED or dataset.probe_all

    def evaluate_fn(m, final: bool = False):
        return evaluate(spec["features"](m), data, spec["mean"], spec["std"], probe and final)

    budget = Budget(budget_s, points, evaluate_fn, stop=not matched_steps)
    trainer = cpu_trainer(precision, steps, [budget])
    fit(trainer, module, loader)
    budget.point(trainer, module, final=True)
    images_per_s = trainer.global_step * spec["batch"] / budget.train_s
    return {
        "run": name, "side": side, "method": method, "seed": seed,
        "budget_min": budget_min, "config": spec["config"],
        "precision": str(trainer.precision),
        "batch": spec["batch"], "steps": trainer.global_step, "planned_steps": steps,
        "n_train": len(data["x_train"]),
        "epochs": trainer.global_step * spec["batch"] / len(data["x_train"]),
        "images_per_s": images_per_s, "config_epochs": spec["config_epochs"],
        "curve": budget.curve, "final": budget.curve[-1], "moved": budget.moved(module),
        "machine": machine(),
        "data": dataset.name, "tag": tag, "threads": torch.get_num_threads(), "points": points,
        **({"overrides": spec["overrides"]} if spec["overrides"] else {}),
        **({"config_rev": rev} if rev and side == "selfsup" else {}),
        **({"set": sets} if sets and side == "selfsup" else {}),
        **({"eval_backbone": eval_backbone} if eval_backbone and side == "selfsup" else {}),
        **fingerprint,
        **({"matched_steps": True} if matched_steps else {}),
    }  # fmt: skip


def baselines(data: dict, dataset: QualityData, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """kNN and probe references: raw pixels, and untrained backbones of the runs' shapes
    (both ResNet-18 starts: timm's zero-initialised last BatchNorm of each block, and
    torchvision's scale 1, which the ResNet configs take; each ResNet also with BatchNorm
    statistics of the training split), but for the runs in ``skip``.

    The probe figures are what the MAE / I-JEPA probes are read against: a linear probe
    is stronger than kNN on any features, so those runs' probe needs a probe baseline.
    PneumoniaMNIST's are :func:`quality_data.pneumonia_baselines`.
    """
    from selfsup.backbones import Backbone

    skip = set(skip)
    if dataset.name != "cifar":
        out = pneumonia_baselines(data, dataset.size, evaluate, skip)
        # lightly's ResNet-18 as its recipes start: 3 channels, ImageNet normalisation
        lightly_init = {"random_init_lightly_resnet18": (LIGHTLY_RANDOM_INIT, {"name": "resnet18"})}  # fmt: skip
        for run_name, method, _, data_bn in untrained_variants(lightly_init):
            for seed in () if "baseline/" + run_name in skip else (0, 1):
                torch.manual_seed(seed)
                net = lightly_resnet18()[0].eval()
                if data_bn:
                    with_data_bn_stats(net, data["x_train"], IMAGENET_MEAN, IMAGENET_STD)
                out.append({"run": "baseline/" + run_name, "side": "baseline", "method": method,
                            "seed": seed, "data": dataset.name,
                            "final": evaluate(lambda x, net=net: net(x).flatten(1), data,
                                              IMAGENET_MEAN, IMAGENET_STD, probe=True)})  # fmt: skip
        return out
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
    out = [] if "baseline/raw_pixels" in skip else [
        {"run": "baseline/raw_pixels", "side": "baseline", "method": "raw pixels", "seed": 0,
         "final": evaluate(lambda x: x.flatten(1), data, mean, std, probe=True)}]  # fmt: skip
    untrained = {  # run: (method, backbone of the runs' shape)
        "random_init_resnet18": ("random-init ResNet-18", dict(name="resnet18", cifar_stem=True)),
        "random_init_resnet18_tv": ("random-init ResNet-18, zero_init_last false",
                                    dict(name="resnet18", cifar_stem=True, zero_init_last=False)),
        "random_init_vit_tiny4": ("random-init ViT-Tiny/4", dict(name="vit_tiny", patch_size=4, pool="avg")),
    }  # fmt: skip
    for run_name, method, kwargs, data_bn in untrained_variants(untrained):
        for seed in () if "baseline/" + run_name in skip else (0, 1):
            torch.manual_seed(seed)
            net = Backbone(img_size=32, **kwargs).eval()
            if data_bn:
                with_data_bn_stats(net, data["x_train"], mean, std)
            out.append({"run": "baseline/" + run_name, "side": "baseline", "method": method,
                        "seed": seed, "final": evaluate(net, data, mean, std, probe=True)})  # fmt: skip
    return out
