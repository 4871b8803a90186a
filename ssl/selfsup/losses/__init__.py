"""Self-supervised losses: one formula each, testable without Lightning."""

from selfsup.losses.cosine import negative_cosine_loss
from selfsup.losses.ntxent import NTXentLoss, nt_xent_loss
from selfsup.losses.triplet import triplet_loss

__all__ = ["NTXentLoss", "negative_cosine_loss", "nt_xent_loss", "triplet_loss"]
