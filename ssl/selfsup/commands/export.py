"""``selfsup export --ckpt CKPT --out FILE.safetensors`` (or ``--format timm-hub --out DIR``):
the backbone for use elsewhere."""

from __future__ import annotations

from typing import Literal

from selfsup.commands.options import print_result
from selfsup.errors import ConfigError


def export(
    ckpt: str,
    out: str,
    backbone: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
    format: Literal["safetensors", "timm-hub"] = "safetensors",
    push_to_hub: str | None = None,
) -> int:
    """Write a checkpoint's backbone as .safetensors, with what rebuilds it in the metadata
    (plain timm for ViTs and standard ResNets; selfsup.checkpoints.load_export for any), or
    as a timm hub folder that timm.create_model("local-dir:DIR", pretrained=True) loads.

    Args:
        ckpt: checkpoint file or run directory
        out: the .safetensors file to write (a directory with --format timm-hub)
        backbone: student or teacher (default: the method's choice)
        pool: ViTs: cls or avg pooling (default: the method's choice)
        format: safetensors (one file) or timm-hub (config.json, model.safetensors and a
            model card README.md, in timm's Hugging Face Hub layout)
        push_to_hub: ORG/NAME: after writing the timm-hub folder, upload it to this Hugging
            Face model repo (needs the network and a token: hf auth login or HF_TOKEN)
    """
    if format == "timm-hub":
        from selfsup.checkpoints.hub import export_hub

        print_result(export_hub(ckpt, out, backbone, pool, push_to_hub))
        return 0
    if push_to_hub is not None:
        raise ConfigError("--push_to_hub uploads a timm hub folder: add --format timm-hub.")
    from selfsup.checkpoints import export_backbone

    print_result(export_backbone(ckpt, out, backbone, pool))
    return 0
