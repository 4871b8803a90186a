"""Self-supervised losses: one formula each, testable without Lightning."""

from selfsup.losses.ntxent import NTXentLoss, nt_xent_loss

__all__ = ["NTXentLoss", "nt_xent_loss"]
