"""A grid of a data set's images as the model will see them (after the window), with
their labels: what to look at before spending a GPU-day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.summary import base_dataset


def write_preview(ds: Dataset, out: str | Path, n: int = 16, seed: int = 0) -> dict:
    """``n`` images of ``ds`` (a seeded random choice, in index order) as one PNG grid,
    4 per row, each titled with its index and label (multi-label: its findings, joined
    by ``|``); returns the path written (``out``, with ``.png`` added where it has no
    suffix matplotlib writes) and the indices shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(ds))
    picks = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    classes = list(getattr(base_dataset(ds), "classes", []) or [])
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picks, strict=False):
        image, label = ds[int(i)]
        image = torch.as_tensor(image)
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if x.shape[0] == 3:
            ax.imshow(x.permute(1, 2, 0).clamp(0, 1).numpy())
        else:  # one channel, or 2k + 1 slices: the middle one
            ax.imshow(x[x.shape[0] // 2].numpy(), cmap="gray", vmin=0, vmax=1)
        if torch.is_tensor(label) and label.ndim == 2:  # a mask: its classes in colour
            _overlay(ax, label, len(classes))
            name = ""
        elif torch.is_tensor(label) and label.ndim == 1:  # 0/1 findings: the present ones
            found = label.nonzero().flatten().tolist()
            name = "|".join(classes[k] if k < len(classes) else str(k) for k in found) or "none"
        else:
            name = (
                classes[label] if 0 <= int(label) < len(classes) else ("" if label < 0 else label)
            )
        ax.set_title(f"#{i} {name}".strip(), fontsize=8)
    if classes and torch.is_tensor(ds[int(picks[0])][1]) and ds[int(picks[0])][1].ndim == 2:
        colours = plt.get_cmap("tab10").colors
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=colours[i % 10]) for i in range(len(classes) - 1)
        ]
        fig.legend(
            handles, classes[1:], loc="lower center", ncol=min(len(classes) - 1, 6), fontsize=8
        )
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    out = Path(out)
    if out.suffix.lower().lstrip(".") not in fig.canvas.get_supported_filetypes():
        # matplotlib would append .png to a bare NAME unseen (the path reported then
        # names no file) and refuse run.v2; added here, both are the PNG reported
        out = out.with_name(out.name + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"preview": str(out), "shown": picks.tolist()}


def _overlay(ax, mask: torch.Tensor, n_classes: int) -> None:
    """The mask's foreground classes over the image, half transparent (tab10 colours)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = plt.get_cmap("tab10").colors
    cmap = ListedColormap([(0, 0, 0, 0), *[(*colours[i % 10], 0.45) for i in range(n_classes - 1)]])
    ax.imshow(mask.numpy(), cmap=cmap, vmin=0, vmax=max(n_classes - 1, 1), interpolation="nearest")
