"""2-D embedding plots of test-set features, coloured by label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.errors import ConfigError


def project_2d(
    features: torch.Tensor, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, str]:
    """``(N, D)`` -> ``(N, 2)``: UMAP where installed (``method='auto'``), else t-SNE
    (scikit-learn, on L2-normalised features: the cosine geometry kNN uses)."""
    x = torch.nn.functional.normalize(features.float(), dim=1).numpy()
    if method in ("auto", "umap"):
        try:
            import umap  # type: ignore[import-not-found]

            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "umap"
        except ImportError:
            if method == "umap":
                raise ConfigError(
                    "--method umap needs the umap-learn package: pip install umap-learn."
                ) from None
    try:
        from sklearn.manifold import TSNE
    except ImportError:  # pragma: no cover - a dependency of selfsup
        raise ConfigError("t-SNE needs scikit-learn: pip install scikit-learn.") from None
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x), "tsne"


def plot_embedding(
    features: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    out: str | Path,
    method: str = "auto",
    max_points: int = 5000,
    seed: int = 0,
    title: str = "",
) -> dict[str, Any]:
    """Scatter of a 2-D projection of (at most ``max_points``, drawn at random) features,
    one colour per class, with a legend of class names; written to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(features) < 5:
        raise ConfigError(f"{len(features)} test images: an embedding plot needs at least 5.")
    if len(features) > max_points:
        keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
        keep = keep[:max_points].sort().values
        features, labels = features[keep], labels[keep]
    xy, used = project_2d(features, method, seed)
    labels_np = labels.numpy()
    classes = sorted(set(labels_np.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, c in enumerate(classes):
        sel = labels_np == c
        name = class_names[c] if c < len(class_names) else str(c)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i % cmap.N), label=name, alpha=0.8)
    ax.legend(markerscale=3, fontsize=8, loc="best", title="class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({used}, {len(features)} test images)".strip(), fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return {"task": "embed", "plot": str(out), "method": used, "n_points": len(features),
            "n_classes": len(classes)}  # fmt: skip
