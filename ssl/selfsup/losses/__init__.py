"""Self-supervised losses, one formula each, testable without Lightning: SimCLR's
NT-Xent, the triplet loss, BYOL's cosine loss, DINO's cross-entropy and centre, MAE's
masked-patch MSE and I-JEPA's smooth-L1 on layer-normed targets."""

from selfsup.losses.cosine import negative_cosine_loss
from selfsup.losses.dino import DINOLoss, dino_loss, teacher_probabilities, updated_center
from selfsup.losses.ijepa import ijepa_loss
from selfsup.losses.mae import mae_loss, patch_statistics
from selfsup.losses.ntxent import NTXentLoss, nt_xent_loss
from selfsup.losses.triplet import triplet_loss

__all__ = [
    "DINOLoss",
    "NTXentLoss",
    "dino_loss",
    "ijepa_loss",
    "mae_loss",
    "negative_cosine_loss",
    "nt_xent_loss",
    "patch_statistics",
    "teacher_probabilities",
    "triplet_loss",
    "updated_center",
]
