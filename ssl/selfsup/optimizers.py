"""Optimisers that torch and lightly do not provide in the form selfsup needs, and the
layer-wise learning-rate decay shared by pretraining and fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017, Eq. 6).

    For each parameter of a group with ``lars_adapt`` (default True), the step is
    scaled by the trust ratio ``r = trust_coefficient x |w| / (|g| + wd x |w|)``, so
    the layer's rate is ``lr x r``. With ``clip`` (solo-learn's ``clip_lr``) the scale
    is ``min(r / lr, 1)`` instead: the layer's rate is ``min(r, lr)``, a step of at
    most ``trust_coefficient x |w|`` (at wd 0) and never faster than the global rate.
    Then, per parameter::

        d = scale x (g + wd x w);   v = momentum x v + d;   w = w - lr x v

    A zero weight or gradient norm leaves the scale at 1. Groups with ``lars_adapt:
    False`` (selfsup puts norms, biases and ViT tokens there) take plain SGD steps.

    Why not lightly's LARS: it cannot clip, and it decides adaptation by a group's
    weight decay (none when it is 0), so ``weight_decay: 0`` silently turned LARS into
    plain SGD for every layer. Here the group decides, whatever its weight decay.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        clip: bool = False,
        eps: float = 1e-8,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "clip": clip,
            "eps": eps,
            "lars_adapt": True,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Optimizer states saved while selfsup used lightly's LARS lack these keys:
        # resume them unclipped, adapting the decayed group.
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("clip", False)
            group.setdefault("eps", 1e-8)
            group.setdefault("lars_adapt", group.get("decayed", True))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                d = g.add(p, alpha=wd) if wd != 0 else g.clone()
                if group.get("lars_adapt", True):  # optimizer states saved before the key
                    # Tensors throughout: no host sync per parameter on a GPU.
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    eta, eps = group["trust_coefficient"], group["eps"]
                    scale = eta * w_norm / (g_norm + wd * w_norm + eps)
                    if group["clip"]:
                        # lr is 0 at the first warm-up step: no step to clip then.
                        scale = (scale / lr).clamp(max=1.0) if lr > 0 else torch.ones_like(scale)
                    d.mul_(torch.where((w_norm > 0) & (g_norm > 0), scale, torch.ones_like(scale)))
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d  # a fresh tensor: g was copied
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-lr)
        return loss


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: weights (two or more dimensions) with ``weight_decay``; norms,
    biases and other vectors without."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]  # fmt: skip


def layer_decay_groups(vit: nn.Module, weight_decay: float, decay: float) -> list[dict[str, Any]]:
    """BEiT/MAE layer-wise decay: embeddings are layer 0, block i layer i + 1, the rest
    (final norm) layer L + 1; layer l trains at ``decay^(L + 1 - l)`` of the head's rate.

    Not timm's ``param_groups_layer_decay``: it puts the final norm in the last block's
    group, so every block gets one factor of ``decay`` less than the reference recipe.
    """
    depth = len(vit.blocks)
    skip = set(vit.no_weight_decay())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in vit.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed")):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = depth + 1
        decayed = p.ndim > 1 and name not in skip
        group = groups.setdefault((layer, decayed), {
            "params": [], "weight_decay": weight_decay if decayed else 0.0,
            "lr_scale": decay ** (depth + 1 - layer), "decayed": decayed,
        })  # fmt: skip
        group["params"].append(p)
    return list(groups.values())
