"""``selfsup data inspect --data.path DATA``: what selfsup will read, before a run spends a GPU-day."""

from __future__ import annotations

import json
import sys

from selfsup.data.module import PretrainDataModule
from selfsup.errors import ConfigError

USAGE = """usage: selfsup data inspect --data.path DATA [--split train] [--out PREVIEW.png] [--data.window ...]
       selfsup data pack --data.path DATA --out SHARDS [--max_side 512] [--workers 4] [--data.window ...]

inspect: counts, shapes, value ranges after the window, channels, labels and groups,
         files skipped and why; and a PNG grid of images as the model will see them.
pack:    every split of DATA, read as a run reads it, written once as streaming shards
         (litdata) that --data.path SHARDS then reads, from a local disk or an object store.
Run 'selfsup data inspect --help' or 'selfsup data pack --help' for the options.
"""


def inspect(
    data: PretrainDataModule,
    split: str = "train",
    out: str | None = None,
    n: int = 16,
    seed: int = 0,
) -> int:
    """Say what selfsup reads from --data.path (as `selfsup pretrain` and the evaluators
    would, with the same --data.* options), and write a grid of images as the model sees them.
    Data with masks (an npz's m_train/m_test, a folder's images/ and masks/) is read as
    `selfsup segment` reads it: each class's pixel share, and the masks over the images.

    Args:
        split: train, val or test
        out: the preview PNG (default: data-preview.png in the current folder)
        n: images in the preview
        seed: which images the preview shows
    """
    from selfsup.data.segmentation import has_masks, open_segmentation
    from selfsup.data.summary import describe
    from selfsup.viz.preview import write_preview

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split {split}: give train, val or test.")
    if has_masks(data.path, split):  # images with masks: both, the masks drawn over
        ds = open_segmentation(data.path, split, data.intensity, data.reading)  # type: ignore[arg-type]
    else:
        ds = data.open(split)  # type: ignore[arg-type]
    info = describe(ds)
    info["reading"] = {k: v for k, v in vars(data.reading).items()}
    info.update(write_preview(ds, out or "data-preview.png", n, seed))
    for key, value in info.items():
        shown = value if not isinstance(value, list) or len(value) <= 8 else [*value[:8], "..."]
        print(f"{key:>20}: {shown}", file=sys.stderr)
    print(json.dumps({"task": "inspect", **info}), flush=True)
    return 0


def pack(data: PretrainDataModule, out: str, max_side: int | None = None, workers: int = 1,
         chunk_bytes: str = "64MB") -> int:  # fmt: skip
    """Write every split of --data.path (train, val, test: those it has), read as a run
    reads it with the same --data.* options, as litdata shards in --out: decoded once, a
    few large chunk files instead of many small ones. --data.path OUT then reads them, in
    pretraining and every evaluator. An interrupted pack is run again with the same command.

    Args:
        out: the folder the shards go to (one sub-folder per split, selfsup.json)
        max_side: cap the longest side of every image (and mask) at this many pixels
        workers: processes that read and write
        chunk_bytes: the size of each chunk file (litdata's; ``64MB`` suits object stores)
    """
    from selfsup.data.packing import pack as write_shards

    if data.path is None:
        raise ConfigError("--data.path is not set: give the source to pack.")
    if max_side is not None and max_side < 8:
        raise ConfigError(f"--max_side {max_side}: give at least 8 pixels, or leave it out.")
    meta = write_shards(data, out, max_side, max(1, workers), chunk_bytes)
    for split, info in meta["splits"].items():
        print(f"{split:>8}: {info['samples']} samples, {len(info['skipped'])} files skipped",
              file=sys.stderr)  # fmt: skip
    print(json.dumps({"task": "pack", "out": str(out), **meta}), flush=True)
    return 0


ACTIONS = {"inspect": inspect, "pack": pack}


def data(argv: list[str]) -> int:
    from selfsup.commands.options import run_with_options

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] not in ACTIONS:
        raise ConfigError(f"selfsup data {argv[0]}: the data command's actions are "
                          f"{', '.join(ACTIONS)}.")  # fmt: skip
    return run_with_options(f"selfsup data {argv[0]}", ACTIONS[argv[0]], argv[1:])
