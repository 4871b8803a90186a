"""Every weight format in and out, a room per job; this module only hands names on.

- :mod:`~selfsup.checkpoints.files`: which file a ``CKPT`` means, and reading it;
- :mod:`~selfsup.checkpoints.loading`: any checkpoint, export, hub folder, timm tag or
  weights file into a backbone;
- :mod:`~selfsup.checkpoints.weights`: the one reader of weights that are not selfsup's;
- :mod:`~selfsup.checkpoints.sources` and :mod:`~selfsup.checkpoints.adapt`: a run's
  starting weights (``init_from``), fitted to its backbone;
- :mod:`~selfsup.checkpoints.export` and :mod:`~selfsup.checkpoints.hub`: backbones out,
  as one file or a timm hub folder.
"""

from selfsup.checkpoints.export import export_backbone, export_metadata
from selfsup.checkpoints.files import (
    global_step,
    newest_checkpoint,
    read_checkpoint,
    resolve_checkpoint,
)
from selfsup.checkpoints.loading import (
    EXPORT_FORMAT,
    LoadedBackbone,
    load_backbone,
    load_export,
    read_export,
)

__all__ = [
    "EXPORT_FORMAT",
    "LoadedBackbone",
    "export_backbone",
    "export_metadata",
    "global_step",
    "load_backbone",
    "load_export",
    "newest_checkpoint",
    "read_checkpoint",
    "read_export",
    "resolve_checkpoint",
]
