"""What the quality study compares: selfsup's config of each method and the lightly recipe
it meets (benchmarks/quality.py says how each side runs)."""

from __future__ import annotations

METHODS = {  # method: (selfsup config, lightly's counterpart)
    "simclr": ("configs/simclr/resnet18_cifar.yaml", "simclr"),
    "triplet": ("configs/triplet/resnet18_cifar.yaml", "simclr"),
    "byol": ("configs/byol/resnet18_cifar.yaml", "byol"),
    "dino": ("configs/dino/resnet18_cifar.yaml", "dino"),
    "mae": ("configs/mae/vit_tiny_cifar.yaml", "mae"),
    "ijepa": ("configs/ijepa/vit_tiny_cifar.yaml", "ijepa"),
}
#: the short-budget recipes, run as ``selfsup/METHOD_small`` (MAE and I-JEPA need none;
#: DINO's collapsed: benchmarks/results/RESULTS.md)
SMALL = {
    f"{method}_small": (f"configs/{method}/resnet18_small.yaml", METHODS[method][1])
    for method in ("simclr", "triplet", "byol")
}
PROBED = {"mae", "ijepa"}  # kNN is weak by design on reconstruction / latent prediction
LIGHTLY_BATCH = {"mae": 256, "ijepa": 256}
