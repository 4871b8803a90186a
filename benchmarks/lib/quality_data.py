"""The data sets of benchmarks/quality.py and what a run changes for each.

- ``cifar``: ../shared/data/cifar10_jpeg.npz (15,000 training, 5,000 test images, RGB,
  32 px). The configs and lightly's recipes run as they are.
- ``pneumonia``: ../shared/data/pneumoniamnist.npz in MedMNIST's layout (2,428 training,
  468 test chest X-rays, grayscale, 28 px, 0 normal / 1 pneumonia). Pretraining and the
  memory bank / probe training set use the train split; the test split is the queries;
  the 270 validation images are not used (the kNN floor of the data's README, 85.7 % and
  AUROC 0.931, is measured with the train split as memory bank). selfsup's configs read
  the file as it is, with :func:`selfsup_overrides`; lightly's recipes get the images
  repeated to 3 channels at 28 px (:func:`lightly_module`), with their own transforms
  (saturation, hue and random grayscale change nothing on a gray image) and ImageNet
  normalisation. Both sides keep their horizontal flips, as benchmarks/chest_xray_dicom.py
  does, although laterality is a feature of a chest X-ray.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import CIFAR, PNEUMONIA

#: selfsup's grayscale normalisation (as benchmarks/chest_xray_dicom.py pretrains).
GRAY_MEAN, GRAY_STD = [0.5], [0.25]
#: the label of a random-init baseline evaluated with BatchNorm statistics of the data
BN_OF_DATA = ", BatchNorm statistics of the training split"
#: the label of lightly's ResNet-18 at random init, as lightly's recipes see the images
LIGHTLY_RANDOM_INIT = "random-init lightly ResNet-18 (3 channels, ImageNet normalisation)"


@dataclass(frozen=True)
class QualityData:
    name: str
    path: Path
    size: int  # image side, px
    classes: tuple[str, ...] | None  # None: CIFAR's records, scored by kNN top-1 only
    probe_all: bool  # every run gets the linear probe at its end (else MAE and I-JEPA)

    def load(self) -> dict[str, Any]:
        """``x_*`` uint8 ``(N, C, H, W)``, ``y_*`` int64 ``(N,)``; ``classes`` where named."""
        with np.load(self.path) as d:
            if "x_train" in d.files:
                split = {s: (d[f"x_{s}"], d[f"y_{s}"]) for s in ("train", "test")}
            else:  # MedMNIST: (N, H, W) images, (N, 1) labels
                split = {s: (d[f"{s}_images"][..., None], d[f"{s}_labels"].reshape(-1))
                         for s in ("train", "test")}  # fmt: skip
        data: dict[str, Any] = {}
        for s, (x, y) in split.items():
            data[f"x_{s}"] = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
            data[f"y_{s}"] = torch.from_numpy(y.astype(np.int64))
        if self.classes is not None:
            data["classes"] = self.classes
        return data


DATASETS = {
    "cifar": QualityData("cifar", CIFAR, 32, None, probe_all=False),
    "pneumonia": QualityData("pneumonia", PNEUMONIA, 28, ("normal", "pneumonia"), probe_all=True),
}


# -- selfsup's configs on 1-channel images --------------------------------------------------
def selfsup_overrides(cfg: dict, size: int) -> list[str]:
    """Command-line overrides that put a ``*_cifar.yaml`` config on 1-channel ``size`` px
    images, as benchmarks/chest_xray_dicom.py does: ``data.channels 1``, the backbone's
    ``in_chans 1`` (and ``img_size`` for a ViT, whose patch must divide ``size``), the
    views at ``size`` with mean 0.5 and std 0.25, ``grayscale`` where the view pipeline
    has colour operations, and DINO's local crops at the config's share of the side."""
    model, transform = cfg["model"]["init_args"], cfg["data"]["transform"]
    kwargs = dict(model.get("backbone_kwargs") or {}, in_chans=1)
    if "img_size" in kwargs:
        patch = kwargs.get("patch_size", 16)
        if size % patch:
            raise ValueError(f"patch size {patch} does not divide {size} px images")
        kwargs["img_size"] = size
    views = transform["init_args"]
    argv = ["--data.channels", "1",
            "--model.init_args.backbone_kwargs", json.dumps(kwargs),
            "--data.transform.init_args.size", str(size),
            "--data.transform.init_args.mean", json.dumps(GRAY_MEAN),
            "--data.transform.init_args.std", json.dumps(GRAY_STD)]  # fmt: skip
    if "grayscale" in _parameters(transform["class_path"]):
        argv += ["--data.transform.init_args.grayscale", "true"]
    if "local_size" in views:
        local = round(views["local_size"] * size / views["size"])
        argv += ["--data.transform.init_args.local_size", str(local)]
    return argv


def _parameters(class_path: str) -> set[str]:
    import importlib

    module, name = class_path.rsplit(".", 1)
    return set(inspect.signature(getattr(importlib.import_module(module), name)).parameters)


# -- lightly's recipes at another size ------------------------------------------------------
@contextmanager
def _lightly_vit_at(size: int) -> Iterator[None]:
    """lightly_recipes' ViT-Tiny/4 built for ``size`` px while the block runs."""
    import timm

    from . import lightly_recipes

    original = lightly_recipes.vit_tiny

    def vit_tiny(dynamic_img_size: bool = False) -> tuple[torch.nn.Module, int]:
        vit = timm.create_model("vit_tiny_patch16_224", img_size=size, patch_size=4,
                                num_classes=0, dynamic_img_size=dynamic_img_size)  # fmt: skip
        return vit, vit.embed_dim

    lightly_recipes.vit_tiny = vit_tiny
    try:
        yield
    finally:
        lightly_recipes.vit_tiny = original


def _ijepa_at(module: Any, size: int, patch: int = 4) -> Any:
    """A LightlyIJEPA rebuilt for ``size`` px: its encoders' torchvision ViT-Tiny (the
    recipe's widths) at that size, and the predictor's fixed sin-cos positions on the
    ``size / patch`` grid the mask collator indexes."""
    from lightly.models import utils
    from lightly.models.modules.ijepa import IJEPABackbone
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(image_size=size, patch_size=patch, num_layers=12, num_heads=3,
                            hidden_dim=192, mlp_dim=768)  # fmt: skip
    module.encoder = IJEPABackbone.from_vit(vit)
    module.target_encoder = copy.deepcopy(module.encoder)
    utils.deactivate_requires_grad(module.target_encoder)
    pos = module.predictor.predictor_pos_embed
    grid = utils.get_2d_sincos_pos_embed(pos.shape[-1], size // patch, cls_token=False)
    module.predictor.predictor_pos_embed = torch.nn.Parameter(
        torch.from_numpy(grid).float().unsqueeze(0), requires_grad=False
    )
    return module


def lightly_module(recipe: str, size: int, **kwargs: Any) -> Any:
    """lightly_recipes' module of ``recipe`` for ``size`` px, 3-channel images: the
    ResNet-18 recipes take any size as they are; MAE's and I-JEPA's ViT-Tiny (patch 4)
    are built for ``size``."""
    from .lightly_recipes import RECIPES

    if size == 32 or recipe not in ("mae", "ijepa"):
        return RECIPES[recipe](**kwargs)
    if recipe == "mae":
        with _lightly_vit_at(size):
            return RECIPES[recipe](**kwargs)
    return _ijepa_at(RECIPES[recipe](**kwargs), size)


# -- baselines ---------------------------------------------------------------------------------
def normalised(images: torch.Tensor, mean, std, batch: int = 500) -> Iterator[torch.Tensor]:
    """Batches of uint8 ``images`` as floats normalised by ``mean``/``std``; 1-channel
    images for a 3-channel normalisation (lightly's recipes on grayscale data) are repeated."""
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float() / 255
        if x.shape[1] != mean.shape[1]:
            x = x.expand(-1, mean.shape[1], -1, -1)
        yield (x - mean) / std


def with_data_bn_stats(net: torch.nn.Module, images: torch.Tensor, mean, std) -> torch.nn.Module:
    """``net`` in eval mode with every BatchNorm's running mean and variance re-estimated
    on ``images`` (torch's ``update_bn``: a cumulative average over the batches).

    A random-init ResNet otherwise normalises with BatchNorm's initial statistics (mean 0,
    variance 1), which fit no data: on the CIFAR subset that alone moved a random
    ResNet-18's kNN by about 5 points, up for one start and down for the other. A trained
    run's network carries statistics of its training views, so its random start is read
    against both."""
    from torch.optim.swa_utils import update_bn

    update_bn(normalised(images, mean, std), net)
    return net.eval()


def untrained_variants(untrained: dict[str, tuple[str, dict]]
                       ) -> Iterator[tuple[str, str, dict, bool]]:  # fmt: skip
    """(run, method, backbone kwargs, BatchNorm statistics of the data?) of each untrained
    backbone, ResNets twice: with BatchNorm's initial statistics and with the data's."""
    for run_name, (method, kwargs) in untrained.items():
        yield run_name, method, kwargs, False
        if kwargs["name"].startswith("resnet"):
            yield run_name + "_bnstats", method + BN_OF_DATA, kwargs, True


# -- baselines on PneumoniaMNIST ------------------------------------------------------------
UNTRAINED_GRAY = {  # run: (method, backbone of the runs' shape at 1 channel)
    "random_init_resnet18": ("random-init ResNet-18", dict(name="resnet18", cifar_stem=True)),
    # the same ResNet with each block's last BatchNorm at scale 1 (torchvision's start)
    "random_init_resnet18_no_zero_init": ("random-init ResNet-18, zero_init_last false",
                                          dict(name="resnet18", cifar_stem=True,
                                               zero_init_last=False)),
    "random_init_vit_tiny4": ("random-init ViT-Tiny/4 (mae)",
                              dict(name="vit_tiny", patch_size=4, pool="avg")),
    "random_init_vit_tiny2": ("random-init ViT-Tiny/2 (ijepa)",
                              dict(name="vit_tiny", patch_size=2, class_token=False, pool="avg")),
}  # fmt: skip


def pneumonia_baselines(data: dict, size: int, evaluate: Callable[..., dict],
                        skip: Iterable[str] = ()) -> list[dict]:  # fmt: skip
    """Raw pixels (kNN on per-image mean-centred pixels; the probe, a logistic regression
    on standardised pixels) and untrained 1-channel backbones of every architecture the
    runs use (kNN and probe), two seeds each, the ResNets also with BatchNorm statistics
    of the training split (:func:`with_data_bn_stats`); but for the runs named in ``skip``."""
    from selfsup.backbones import Backbone

    def centred(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return x - x.mean(1, keepdim=True)

    skip, out = set(skip), []
    if "baseline/raw_pixels" not in skip:
        knn = evaluate(centred, data, GRAY_MEAN, GRAY_STD)
        probe = evaluate(lambda x: x.flatten(1), data, GRAY_MEAN, GRAY_STD, probe=True, knn=False)
        out.append({"run": "baseline/raw_pixels", "side": "baseline", "method": "raw pixels",
                    "seed": 0, "data": "pneumonia", "final": {**knn, **probe}})  # fmt: skip
    for run_name, method, kwargs, data_bn in untrained_variants(UNTRAINED_GRAY):
        for seed in () if "baseline/" + run_name in skip else (0, 1):
            torch.manual_seed(seed)
            net = Backbone(img_size=size, in_chans=1, **kwargs).eval()
            if data_bn:
                with_data_bn_stats(net, data["x_train"], GRAY_MEAN, GRAY_STD)
            out.append({"run": "baseline/" + run_name, "side": "baseline", "method": method,
                        "seed": seed, "data": "pneumonia",
                        "final": evaluate(net, data, GRAY_MEAN, GRAY_STD, probe=True)})  # fmt: skip
    return out
