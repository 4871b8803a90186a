"""``selfsup attention | reconstruct | embed``: pictures of what a backbone learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from selfsup.commands.evaluate import EvalSource, require_path, start_processes
from selfsup.commands.options import print_result
from selfsup.data.module import PretrainDataModule
from selfsup.errors import ConfigError


def attention(
    ckpt: str,
    image: str | list[str],
    out: str,
    threshold: float = 0.6,
    backbone: Literal["student", "teacher"] | None = None,
    size: tuple[int, int] | None = None,
    timm_model: str | None = None,
) -> int:
    """A ViT's last-block attention maps (every head, their mean, the thresholded mask) for
    images of any size, as PNGs per image and one overview grid.

    Args:
        ckpt: checkpoint file, run directory or export
        image: an image file (PNG, JPEG, TIFF, ... or DICOM), or a list of them: [a.png,b.dcm]
        out: output directory
        threshold: share of the attention mass the mask keeps
        backbone: student or teacher (default: the method's choice)
        size: resize to H W (default: shorter side = the training size, aspect kept)
        timm_model: ckpt is a weights file of this timm ViT
    """
    from selfsup.checkpoints import load_backbone
    from selfsup.viz.attention import write_attention

    loaded = load_backbone(ckpt, backbone, timm_model=timm_model)
    images = [image] if isinstance(image, str) else image
    print_result(write_attention(loaded, images, out, threshold, tuple(size) if size else None))
    return 0


def reconstruct(
    ckpt: str, image: str | list[str], out: str, upscale: int | None = None, seed: int = 0
) -> int:
    """MAE: original | masked | reconstruction panels as PNG, one file per image.

    Args:
        ckpt: an MAE checkpoint file or run directory
        image: an image file (PNG, JPEG, TIFF, ... or DICOM), or a list of them: [a.png,b.dcm]
        out: output directory
        upscale: pixel repeat per panel (default: at least 96 px)
        seed: seed of the random mask
    """
    from selfsup.viz.reconstruct import write_reconstructions

    model, meta, path = load_mae(ckpt)
    images = [image] if isinstance(image, str) else image
    result = write_reconstructions(model, meta, images, out, upscale, seed)
    print_result({**result, "checkpoint": str(path)})
    return 0


def load_mae(ckpt: str) -> tuple[Any, dict[str, Any], Path]:
    """The whole MAE of a checkpoint file or run directory (its decoder draws the
    reconstructions: a picture only that method can make), in eval mode."""
    from selfsup.checkpoints import read_checkpoint, resolve_checkpoint
    from selfsup.methods import MAE

    path = resolve_checkpoint(ckpt)
    meta = read_checkpoint(path).get("selfsup") or {}
    if meta.get("method") != "MAE":
        raise ConfigError(
            f"{path} is a {meta.get('method', 'non-selfsup')} checkpoint: reconstructions need "
            "MAE's decoder, so give an MAE checkpoint."
        )
    model = MAE.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return model.eval(), meta, path


def embed(
    source: EvalSource,
    data: PretrainDataModule,
    method: Literal["auto", "tsne", "umap"] = "auto",
    max_points: int = 5000,
    seed: int = 0,
    cache: bool = True,
) -> int:
    """A 2-D map (UMAP where installed, else t-SNE) of the test split's features, coloured
    by label, written to --out (a .png; default RUN/eval/embed-<data>/embedding.png).

    Args:
        method: the projection
        max_points: at most this many test images (a seeded, stratified choice)
        seed: seed of the projection and the choice
        cache: read and store features in $SELFSUP_CACHE (false extracts them again)
    """
    from selfsup.eval.features import cached_features
    from selfsup.viz.embed import plot_embedding

    loaded = source.load()
    fabric, device = start_processes(source.devices, source.accelerator)
    path = require_path(data)
    test = data.open("test")
    if test.targets is None:
        raise ConfigError(f"{path} has no test labels: the plot colours points by label.")
    feats, labels, _ = cached_features(loaded, path, "test", test, data.batch_size,
                                       data.num_workers, cache, device)  # fmt: skip
    if fabric is not None and not fabric.is_global_zero:
        return 0
    title = f"{loaded.meta['method']} {loaded.meta['backbone']}"
    plot = source.out or str(source.eval_dir("embed", data) / "embedding.png")
    result = plot_embedding(feats, labels, list(test.classes), plot, method, max_points, seed,
                            title)  # fmt: skip
    print_result({**result, "checkpoint": loaded.path})
    return 0
