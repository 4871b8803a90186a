"""Pretraining methods: one LightningModule each, on a shared base."""

from selfsup.methods.base import SelfSupervisedMethod
from selfsup.methods.simclr import SimCLR

__all__ = ["SelfSupervisedMethod", "SimCLR"]
