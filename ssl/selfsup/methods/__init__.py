"""Pretraining methods: one LightningModule each, on a shared base; :data:`METHODS`
and :func:`method_class` look them up by name."""

from selfsup.methods.base import SelfSupervisedMethod
from selfsup.methods.byol import BYOL
from selfsup.methods.dino import DINO
from selfsup.methods.dinov2 import DINOv2
from selfsup.methods.ijepa import IJEPA
from selfsup.methods.mae import MAE
from selfsup.methods.registry import METHODS, method_class
from selfsup.methods.simclr import SimCLR
from selfsup.methods.teacher import TeacherStudentMethod
from selfsup.methods.triplet import Triplet

__all__ = [
    "BYOL",
    "DINO",
    "IJEPA",
    "MAE",
    "METHODS",
    "DINOv2",
    "SelfSupervisedMethod",
    "SimCLR",
    "TeacherStudentMethod",
    "Triplet",
    "method_class",
]
