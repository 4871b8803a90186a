"""Pretraining methods: one LightningModule each, on a shared base."""

from selfsup.methods.base import SelfSupervisedMethod
from selfsup.methods.byol import BYOL
from selfsup.methods.dino import DINO
from selfsup.methods.ijepa import IJEPA
from selfsup.methods.mae import MAE
from selfsup.methods.simclr import SimCLR
from selfsup.methods.teacher import TeacherStudentMethod
from selfsup.methods.triplet import Triplet

__all__ = [
    "BYOL",
    "DINO",
    "IJEPA",
    "MAE",
    "SelfSupervisedMethod",
    "SimCLR",
    "TeacherStudentMethod",
    "Triplet",
]
