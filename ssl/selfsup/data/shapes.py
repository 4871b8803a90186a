"""``shapes``: a built-in, procedurally generated labelled set that needs no download.

Ten shape classes drawn at 32x32 px. The label is the shape; everything else is
nuisance: position, size, rotation, aspect, foreground colour and texture
(solid, stripes or checks), background colour gradient and noise, and a small
distractor blob. Colour and background dominate the raw pixels, so raw-pixel
kNN is weak, while a few minutes of contrastive pretraining with colour jitter
and crops learns the shapes. Generation is deterministic (seeded per split)
and takes well under a second.
"""

from __future__ import annotations

import numpy as np

CLASSES = (
    "circle",
    "square",
    "triangle",
    "pentagon",
    "star",
    "ring",
    "cross",
    "ellipse",
    "half_disc",
    "bar_pair",
)
SIZE = 32
SPLITS = {"train": (6000, 0), "test": (2000, 1)}  # split -> (images, seed)


def _polygon(r: np.ndarray, theta: np.ndarray, n: int) -> np.ndarray:
    sector = 2 * np.pi / n
    return r * np.cos(np.mod(theta, sector) - sector / 2) < np.cos(np.pi / n)


def _masks(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean masks ``(N, H, W)`` of the shapes in rotated unit coordinates ``u, v``."""
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    shapes = {
        0: r < 1.0,
        1: np.maximum(np.abs(u), np.abs(v)) < 0.8,
        2: _polygon(r, theta, 3),
        3: _polygon(r, theta, 5),
        4: r < 0.5 + 0.45 * np.cos(5 * theta),
        5: (r < 1.0) & (r > 0.6),
        6: ((np.abs(u) < 0.3) & (np.abs(v) < 1.0)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1.0)),
        7: (u / 1.0) ** 2 + (v / 0.5) ** 2 < 1.0,
        8: (r < 1.0) & (v > 0.0),
        9: (np.abs(u) < 1.0) & (np.abs(np.abs(v) - 0.55) < 0.2),
    }
    out = np.zeros(u.shape, dtype=bool)
    for k, mask in shapes.items():
        sel = label == k
        out[sel] = mask[sel]
    return out


def generate_shapes(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, size, size, 3)`` uint8 and their labels ``(n,)`` uint8, balanced."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.uint8)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    yy, xx = yy[None] / size, xx[None] / size  # (1, H, W) in [0, 1]

    def col(k: int) -> np.ndarray:
        return rng.uniform(0, 1, (n, 1, 1, k))

    # Background: a random linear colour gradient plus pixel noise.
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    bg_a, bg_b = col(3), col(3)
    image = bg_a + (bg_b - bg_a) * (ramp - ramp.min(axis=(1, 2), keepdims=True))
    image += rng.normal(0, 0.06, image.shape)

    # Shape: random centre, radius, rotation and aspect.
    radius = rng.uniform(0.22, 0.4, (n, 1, 1))
    cy, cx = (
        rng.uniform(radius[:, 0, 0] + 0.02, 0.98 - radius[:, 0, 0])[:, None, None] for _ in range(2)
    )
    rot = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    aspect = rng.uniform(0.8, 1.25, (n, 1, 1))
    dy, dx = (yy - cy) / radius, (xx - cx) / radius
    u = (np.cos(rot) * dx + np.sin(rot) * dy) * aspect
    v = (-np.sin(rot) * dx + np.cos(rot) * dy) / aspect
    mask = _masks(label, u, v)[..., None]

    # Foreground texture: solid, stripes or checks between two colours.
    fg_a, fg_b = col(3), col(3)
    kind = rng.integers(0, 3, (n, 1, 1))
    freq = rng.uniform(6, 12, (n, 1, 1))
    stripes = np.sin(freq * np.pi * (u + 0.3 * v)) > 0
    checks = (np.sin(freq * np.pi * u) > 0) ^ (np.sin(freq * np.pi * v) > 0)
    pattern = np.where(kind == 0, False, np.where(kind == 1, stripes, checks))[..., None]
    foreground = np.where(pattern, fg_b, fg_a)
    image = np.where(mask, foreground, image)

    # Distractor: a small blob of a random colour somewhere else.
    by, bx = rng.uniform(0.05, 0.95, (n, 1, 1)), rng.uniform(0.05, 0.95, (n, 1, 1))
    blob = ((yy - by) ** 2 + (xx - bx) ** 2 < rng.uniform(0.04, 0.08, (n, 1, 1)) ** 2)[..., None]
    image = np.where(blob & ~mask, col(3), image)

    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), label


def make_shapes(split: str):
    from selfsup.data.datasets import ArrayDataset

    n, seed = SPLITS[split]
    images, labels = generate_shapes(n, seed)
    return ArrayDataset(images, labels, CLASSES, source="shapes")
