"""Fit a state dict in timm's keys to a backbone built differently: image size, patch size,
input channels, class and register tokens. Every change is said in one line.

The resampling is timm's own: ``resample_abs_pos_embed`` (position embeddings to a new
patch grid, bicubic), ``resample_patch_embed`` (patch-embedding kernels to a new patch
size, FlexiViT's pseudo-inverse resize) and ``adapt_input_conv`` (RGB -> 1 channel by
summing the kernels; 1 -> 3 by repeating them, scaled by 1/3 so a gray image repeated
over three channels gives the same response).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models._manipulate import adapt_input_conv
from torch import nn

#: The first convolution of timm's ViTs and ResNets.
INPUT_CONVS = ("patch_embed.proj.weight", "conv1.weight", "stem.conv.weight", "stem.0.weight")


@dataclass
class Adapted:
    """A state dict fitted to a model: what was changed (one line each), and the keys
    that still do not fit (``missing``: the model's keys the weights lack; ``unexpected``:
    keys of the weights the model lacks; ``shapes``: ``key (weights) vs (model)``)."""

    state: dict[str, torch.Tensor]
    changes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))


def _prefix_positions(n: int, tokens: int) -> tuple[int, int]:
    """Split ``n`` position embeddings into (prefix, square grid side), given the weights'
    ``tokens`` (class + register tokens): the prefix covers all of them, the class token
    only, or none (timm's ``no_embed_class``), whichever leaves a square grid."""
    for prefix in dict.fromkeys((tokens, min(tokens, 1), 0)):
        side = math.isqrt(max(n - prefix, 0))
        if side * side == n - prefix:
            return prefix, side
    side = math.isqrt(n)
    return n - side * side, side


def _pos_embed(
    src: torch.Tensor, tokens: int, model: nn.Module, target: torch.Tensor, changes: list[str]
) -> torch.Tensor:
    """Position embeddings resampled to the model's grid, with its prefix positions."""
    grid = tuple(model.patch_embed.grid_size)
    want_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    have_prefix, side = _prefix_positions(src.shape[1], tokens)
    prefix, patches = src[:, :have_prefix], src[:, have_prefix:]
    if (side, side) != grid:
        patches = resample_abs_pos_embed(patches, new_size=list(grid), old_size=[side, side],
                                         num_prefix_tokens=0)  # fmt: skip
        changes.append(f"position embeddings resampled from a {side}x{side} to a "
                       f"{grid[0]}x{grid[1]} patch grid (bicubic, timm)")  # fmt: skip
    if have_prefix > want_prefix:
        changes.append(f"{have_prefix - want_prefix} prefix position embedding(s) dropped "
                       f"(the backbone has {want_prefix})")  # fmt: skip
        prefix = prefix[:, :want_prefix]
    elif have_prefix < want_prefix:
        changes.append(f"{want_prefix - have_prefix} prefix position embedding(s) start fresh "
                       f"(the weights have {have_prefix})")  # fmt: skip
        prefix = torch.cat([prefix, target[:, have_prefix:want_prefix].to(src.dtype)], 1)
    return torch.cat([prefix, patches], 1)


def _input_conv(
    key: str, src: torch.Tensor, target: torch.Tensor, changes: list[str]
) -> torch.Tensor:
    """The first convolution adapted to the model's input channels and kernel size."""
    out = src
    if src.shape[1] != target.shape[1]:
        out = adapt_input_conv(target.shape[1], out, base_chans=src.shape[1])
        how = "summed" if target.shape[1] == 1 else "repeated and scaled"
        changes.append(f"{key}: {src.shape[1]} -> {target.shape[1]} input channel(s), "
                       f"kernels {how} (timm's adapt_input_conv)")  # fmt: skip
    if key.startswith("patch_embed") and tuple(out.shape[2:]) != tuple(target.shape[2:]):
        size = list(target.shape[2:])
        out = resample_patch_embed(out, size)
        changes.append(f"patch embedding resized from {src.shape[2]}x{src.shape[3]} to "
                       f"{size[0]}x{size[1]} patches (timm's resample_patch_embed)")  # fmt: skip
    return out


def _tokens(key: str, src: torch.Tensor, target: torch.Tensor | None, changes: list[str]):
    """Class and register tokens: kept, dropped where the model has none, cut or grown
    (fresh) to the model's number of registers."""
    name = "class token" if key == "cls_token" else "register tokens"
    if target is None:
        changes.append(f"{name} dropped: the backbone has none")
        return None
    if src.shape == target.shape or src.shape[-1] != target.shape[-1]:
        return src  # equal, or of another width: left to the shape check
    n = min(src.shape[1], target.shape[1])
    changes.append(f"{name}: {src.shape[1]} in the weights, {target.shape[1]} in the backbone "
                   f"({n} kept, the rest {'dropped' if src.shape[1] > n else 'fresh'})")  # fmt: skip
    return torch.cat([src[:, :n], target[:, n:].to(src.dtype)], 1)


def adapt_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, classifier: tuple[str, ...] = ()
) -> Adapted:
    """``state`` (timm's keys) fitted to ``model`` (a timm ViT or ResNet), see the module
    doc. ``classifier``: key prefixes of the weights' classification head, dropped (the
    backbone has none) rather than reported as unexpected."""
    target = model.state_dict()
    changes: list[str] = []
    head = (
        sorted(k for k in state if k.startswith(classifier) and k not in target)
        if classifier
        else []
    )
    if head:
        changes.append(f"classifier head dropped ({', '.join(head)}): the backbone has none")
    state = {k: v for k, v in state.items() if k not in head}
    if "fc_norm.weight" in state and "norm.weight" not in state and "norm.weight" in target:
        for p in ("weight", "bias"):
            if f"fc_norm.{p}" in state:
                state[f"norm.{p}"] = state.pop(f"fc_norm.{p}")
        changes.append("fc_norm (norm after pooling) taken as the final norm")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tgt = target.get(key)
        if key in ("cls_token", "reg_token"):
            value = _tokens(key, value, tgt, changes)
            if value is None:
                continue
        elif (
            tgt is not None
            and key == "pos_embed"
            and value.shape != tgt.shape
            and value.shape[-1] == tgt.shape[-1]
        ):
            tokens = sum(state[k].shape[1] for k in ("cls_token", "reg_token") if k in state)
            value = _pos_embed(value, tokens, model, tgt, changes)
        elif (
            tgt is not None
            and key in INPUT_CONVS
            and value.ndim == 4
            and value.shape != tgt.shape
            and value.shape[0] == tgt.shape[0]
        ):
            value = _input_conv(key, value, tgt, changes)
        out[key] = value
    adapted = Adapted(out, changes)
    adapted.missing = sorted(k for k in target if k not in out)
    adapted.unexpected = sorted(k for k in out if k not in target)
    adapted.shapes = [f"{k} {_shape(v)} vs {_shape(target[k])}" for k, v in out.items()
                      if k in target and v.shape != target[k].shape]  # fmt: skip
    return adapted


def summarise_keys(keys: list[str], shown: int = 4) -> str:
    """A few keys, blocks collapsed (``blocks.3-11.*``), and how many in all."""
    if not keys:
        return "none"
    seen: list[str] = []
    for k in keys:
        parts = k.split(".")
        short = (
            f"{parts[0]}.*" if parts[0] in ("blocks", "layer1", "layer2", "layer3", "layer4") else k
        )
        if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
            short = "blocks.N.*"
        if short not in seen:
            seen.append(short)
    more = f", ... ({len(keys)} keys)" if len(seen) > shown or len(keys) > len(seen) else ""
    return ", ".join(seen[:shown]) + more
