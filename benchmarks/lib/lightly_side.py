"""lightly's side of a quality run: a recipe (benchmarks/lib/lightly_recipes.py) as
lightly's CIFAR-10 benchmark runs it, with its own transforms, batch and fp32
(:func:`spec`)."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from .lightly_recipes import IMAGENET_MEAN, IMAGENET_STD, RECIPES
from .methods import LIGHTLY_BATCH, METHODS, PROBED
from .quality_data import QualityData, lightly_module


class _Views(torch.utils.data.Dataset):
    """uint8 ``(N, C, H, W)`` images as PIL images through ``transform``, with labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        image = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        return self.transform(image), int(self.labels[i])


def lightly_transform(method: str, size: int = 32):
    """lightly's transform of a recipe as its CIFAR-10 benchmark sets it, at ``size`` px."""
    from lightly import transforms as lt
    from lightly.transforms.ijepa_transform import IJEPATransform

    if method == "simclr":
        return lt.SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0)
    if method == "byol":
        return lt.BYOLTransform(
            view_1_transform=lt.BYOLView1Transform(input_size=size, gaussian_blur=0.0),
            view_2_transform=lt.BYOLView2Transform(input_size=size, gaussian_blur=0.0),
        )
    if method == "dino":
        return lt.DINOTransform(
            global_crop_size=size, n_local_views=0, cj_strength=0.5, gaussian_blur=(0, 0, 0)
        )
    if method == "mae":
        return lt.MAETransform(input_size=size)
    return IJEPATransform(input_size=size)


def spec(method: str, seed: int, workers: int, data: dict,
         dataset: QualityData) -> dict[str, Any]:  # fmt: skip
    """A run of lightly's counterpart of ``method``, as :func:`selfsup_side.spec` describes
    selfsup's: ``build`` -> (module, DataLoader of lightly's views, "32-true")."""
    recipe = METHODS[method][1]
    batch = LIGHTLY_BATCH.get(recipe, 128)
    backbone = "vit_tiny" if recipe in PROBED else "resnet18"
    images, size = data["x_train"], dataset.size
    if images.shape[1] == 1:  # lightly's transforms and models take RGB: gray repeated
        images = images.repeat(1, 3, 1, 1)

    def build(scale: float = 1.0, max_steps: int | None = None):
        pl.seed_everything(seed, verbose=False)
        steps_per_epoch = len(data["x_train"]) // batch
        epochs = math.ceil((max_steps or steps_per_epoch) / steps_per_epoch)
        module = lightly_module(recipe, size, backbone=backbone, batch_size=batch,
                                max_epochs=epochs, total_steps=max_steps or 1000)  # fmt: skip
        collate = None
        if recipe == "ijepa":
            from lightly.data import IJEPAMaskCollator

            collate = IJEPAMaskCollator(input_size=size, patch_size=4)
        loader = torch.utils.data.DataLoader(
            _Views(images, data["y_train"], lightly_transform(recipe, size)),
            batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
            collate_fn=collate, generator=torch.Generator().manual_seed(seed),
            persistent_workers=workers > 0,
        )  # fmt: skip
        return module, loader, "32-true"

    config = f"benchmarks/lib/lightly_recipes.py:{RECIPES[recipe].__name__}"
    if dataset.name != "cifar":
        config += f" ({size} px, gray repeated to 3 channels)"
    return {
        "build": build, "precision": "32-true", "batch": batch, "config_epochs": None,
        "config": config, "overrides": [],
        "features": lambda m: m.features, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    }  # fmt: skip
