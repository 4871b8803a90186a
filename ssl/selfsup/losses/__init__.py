"""Self-supervised losses, one formula each, testable without Lightning: SimCLR's
NT-Xent, the triplet loss, BYOL's cosine loss, DINO's cross-entropy and centre, MAE's
masked-patch MSE, I-JEPA's smooth-L1 on layer-normed targets, and DINOv2's pieces:
iBOT's masked-patch loss, KoLeo, Sinkhorn-Knopp, and DINOv3's Gram anchoring."""

from selfsup.losses.cosine import negative_cosine_loss
from selfsup.losses.dino import (
    DINOLoss,
    dino_cross_entropy,
    dino_loss,
    teacher_probabilities,
    updated_center,
)
from selfsup.losses.gram import gram_loss
from selfsup.losses.ibot import ibot_patch_loss
from selfsup.losses.ijepa import ijepa_loss
from selfsup.losses.koleo import koleo_loss
from selfsup.losses.mae import mae_loss, patch_statistics
from selfsup.losses.ntxent import NTXentLoss, nt_xent_loss
from selfsup.losses.sinkhorn import sinkhorn_knopp
from selfsup.losses.triplet import triplet_loss

__all__ = [
    "DINOLoss",
    "NTXentLoss",
    "dino_cross_entropy",
    "dino_loss",
    "gram_loss",
    "ibot_patch_loss",
    "ijepa_loss",
    "koleo_loss",
    "mae_loss",
    "negative_cosine_loss",
    "nt_xent_loss",
    "patch_statistics",
    "sinkhorn_knopp",
    "teacher_probabilities",
    "triplet_loss",
    "updated_center",
]
