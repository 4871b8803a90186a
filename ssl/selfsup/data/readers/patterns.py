"""``patterns``: a built-in, procedurally generated labelled set that needs no download.

Ten pattern classes at 32x32 px; the label is the pattern. Everything else is
nuisance: the two colours, the spatial frequency, phase and a small rotation,
contrast, a random colour ramp over the image and pixel noise. Raw pixels and
the pooled features of an untrained network see mostly that nuisance, so
raw-pixel and random-init kNN are weak, while a few minutes of SimCLR on a CPU
learn the patterns. Read as grayscale (``data.channels: 1``) for that: in
colour, the random colours alone tell images apart, and contrastive learning
takes that shortcut first.

Every class maps to itself under a horizontal flip (flips are a standard
augmentation), and generation is deterministic per split and vectorised. This
module makes arrays only; ``selfsup.data.datasets`` wraps them as a dataset.
"""

from __future__ import annotations

import numpy as np

CLASSES = (
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "diagonal_checks",
    "dots",
    "rings",
    "grid_lines",
    "waves",
    "speckle",
)
SIZE = 32
SPLITS = {"train": (6000, 0), "test": (2000, 1)}  # split -> (images, seed)


def _patterns(
    label: np.ndarray, u: np.ndarray, v: np.ndarray, r: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Binary patterns ``(N, H, W)`` in rotated, frequency-scaled coordinates ``u, v``."""
    n, h, w = u.shape
    diag_sign = np.where(
        rng.random((n, 1, 1)) < 0.5, 1.0, -1.0
    )  # "/" or "\": one flip-invariant class
    speckle = rng.random((n, h // 4, w // 4)) < 0.5
    speckle = speckle.repeat(4, axis=1).repeat(4, axis=2)
    out = {
        0: np.sin(np.pi * v) > 0,
        1: np.sin(np.pi * u) > 0,
        2: np.sin(np.pi * (u + diag_sign * v) / np.sqrt(2)) > 0,
        3: (np.sin(np.pi * u) > 0) ^ (np.sin(np.pi * v) > 0),
        4: (np.sin(np.pi * (u + v) / np.sqrt(2)) > 0) ^ (np.sin(np.pi * (u - v) / np.sqrt(2)) > 0),
        5: (np.mod(u, 2) - 1) ** 2 + (np.mod(v, 2) - 1) ** 2 < 0.35,
        6: np.sin(np.pi * r) > 0,
        7: (np.abs(np.mod(u, 2) - 1) < 0.3) | (np.abs(np.mod(v, 2) - 1) < 0.3),
        8: np.sin(np.pi * (v + 0.6 * np.sin(np.pi * u / 2.5))) > 0,
        9: speckle,
    }
    pattern = np.zeros(u.shape, dtype=bool)
    for k, p in out.items():
        sel = label == k
        pattern[sel] = p[sel]
    return pattern


def generate_patterns(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, size, size, 3)`` uint8 and their labels ``(n,)`` uint8, balanced."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.uint8)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    yy, xx = yy[None] - size / 2, xx[None] - size / 2  # (1, H, W), centred pixels

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, (n, 1, 1))

    period = uniform(3.0, 6.0)  # pixels per half period
    angle = uniform(-0.25, 0.25)  # a small rotation keeps each class's orientation
    cy, cx = uniform(-size / 2, size / 2), uniform(-size / 2, size / 2)
    dy, dx = yy - cy * (label[:, None, None] == 6), xx - cx * (label[:, None, None] == 6)
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / period + uniform(0, 2)
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / period + uniform(0, 2)
    r = np.hypot(dx, dy) / period
    pattern = _patterns(label, u, v, r, rng)[..., None]

    # Two random colours, a random colour ramp across the image, and pixel noise.
    colour_a, colour_b = rng.uniform(0, 1, (n, 1, 1, 3)), rng.uniform(0, 1, (n, 1, 1, 3))
    contrast = uniform(0.5, 1.0)[..., None]
    colour_b = colour_a + contrast * (colour_b - colour_a)
    image = np.where(pattern, colour_b, colour_a)
    ramp_dir = uniform(0, 2 * np.pi)
    ramp = ((np.cos(ramp_dir) * xx + np.sin(ramp_dir) * yy) / size)[..., None]
    image = image + ramp * rng.uniform(-0.4, 0.4, (n, 1, 1, 3))
    image = image + rng.normal(0, 0.05, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), label
