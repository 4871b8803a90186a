"""The registry of selfsup's methods, built from the classes themselves: a method's
name is its class name, the one a config gives as ``selfsup.methods.<Name>``."""

from __future__ import annotations

import difflib

from selfsup.errors import ConfigError
from selfsup.methods.base import SelfSupervisedMethod
from selfsup.methods.byol import BYOL
from selfsup.methods.dino import DINO
from selfsup.methods.dinov2 import DINOv2
from selfsup.methods.ijepa import IJEPA
from selfsup.methods.mae import MAE
from selfsup.methods.simclr import SimCLR
from selfsup.methods.triplet import Triplet

#: Every pretraining method by class name, in the order the documentation lists them.
METHODS: dict[str, type[SelfSupervisedMethod]] = {
    cls.__name__: cls for cls in (SimCLR, Triplet, BYOL, DINO, DINOv2, MAE, IJEPA)
}


def method_class(name: str) -> type[SelfSupervisedMethod]:
    """The method named ``name``: a class name (``DINO``) or a class path whose last part
    is one (``selfsup.methods.DINO``).

    Raises:
        ConfigError: for any other name, listing the methods and the closest matches.
    """
    short = name.rsplit(".", 1)[-1]
    if short in METHODS:
        return METHODS[short]
    # Close matches ignore case ("dino" -> DINO), which difflib alone would not see.
    by_lower = {n.lower(): n for n in METHODS}
    close = [
        by_lower[n] for n in difflib.get_close_matches(short.lower(), by_lower, n=2, cutoff=0.4)
    ]
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown method {name!r}: selfsup's methods are {', '.join(METHODS)} "
        f"(model.class_path: selfsup.methods.<Method>).{hint}"
    )
