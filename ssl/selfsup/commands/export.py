"""``selfsup export --ckpt CKPT --out FILE.safetensors``: the backbone for use elsewhere."""

from __future__ import annotations

from typing import Literal

from selfsup.commands.options import print_result


def export(
    ckpt: str,
    out: str,
    backbone: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
) -> int:
    """Write a checkpoint's backbone as .safetensors, with what rebuilds it in the metadata
    (plain timm for ViTs and standard ResNets; selfsup.checkpoints.load_export for any).

    Args:
        ckpt: checkpoint file or run directory
        out: the .safetensors file to write
        backbone: student or teacher (default: the method's choice)
        pool: ViTs: cls or avg pooling (default: the method's choice)
    """
    from selfsup.checkpoints import export_backbone

    print_result(export_backbone(ckpt, out, backbone, pool))
    return 0
