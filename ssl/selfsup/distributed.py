"""Collectives that are no-ops without a process group, so every loss is testable alone."""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightly.utils.dist import gather as _gather_with_grad


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``(B, ...)`` from every process -> ``(world * B, ...)``, in rank order.

    Gradients flow back to each process's own slice (lightly's GatherLayer: the
    backward all-reduces, so under DDP's gradient averaging the result equals one
    process holding the whole batch). Shapes must match on every process.
    """
    if not is_distributed():
        return x
    return torch.cat(_gather_with_grad(x), dim=0)


@torch.no_grad()
def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``(n_r, ...)`` from every process where ``n_r`` may differ (no gradient)."""
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)], dim=0)


def global_views(
    z0: torch.Tensor, z1: torch.Tensor, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Both views' embeddings of the global batch and this process's row offset in them.

    ``z0, z1`` ``(B, D)`` -> ``(all0, all1, offset)`` with ``all0[offset + i]`` this
    process's ``z0[i]``; gradients flow back through the gather. Without ``gather``
    (or a process group) the local batch is the global one.
    """
    if not gather:
        return z0, z1, 0
    return gather_with_grad(z0), gather_with_grad(z1), rank() * z0.shape[0]


def gather_object_list(obj: object) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` alone)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
