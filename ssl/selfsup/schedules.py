"""Schedules as pure functions of the step (as the DINO and MAE reference code does)."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    start: float,
    end: float,
    warmup_start: float = 0.0,
) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup_steps``, then a
    half-cosine from ``start`` to ``end`` at ``total_steps`` (held there after)."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    if total_steps <= warmup_steps:
        return end
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def linear(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``total_steps`` (held there after)."""
    if total_steps <= 0:
        return end
    return start + (end - start) * min(1.0, step / total_steps)
