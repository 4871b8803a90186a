"""A run's starting weights (``init_from``): read and fitted before training, said in the
run's summary, normalised as they were trained, and recorded in the run directory.

``RUN/init_from.txt`` holds the summary lines and, with ``init_strict: false``, every key
that did not fit.
"""

from __future__ import annotations

from typing import Any

from selfsup.run_directory import RunDir


def channel_stats(values: list[float], channels: int) -> list[float]:
    """Per-channel statistics for ``channels`` channels: RGB -> gray takes the mean of the
    three (the kernels were summed), gray -> RGB repeats the one value."""
    if len(values) == channels:
        return list(values)
    if channels == 1:
        return [sum(values) / len(values)]
    if len(values) == 1:
        return list(values) * channels
    return list(values)[:channels]


def prepare_starting_weights(model: Any, datamodule: Any, run_dir: str, write: bool) -> list[str]:
    """Read and fit ``model``'s ``init_from`` (one-line errors, exit 2, before any training),
    take the weights' normalisation where the source records one, and write
    ``RUN/init_from.txt`` when ``write`` (rank 0). Returns the summary lines."""
    plan = model.prepare_init()
    lines = plan.lines()
    source, transform = plan.source, getattr(datamodule, "transform", None)
    if source.mean and source.std and transform is not None and hasattr(transform, "renormalise"):
        channels = model.backbone.in_chans
        mean, std = channel_stats(source.mean, channels), channel_stats(source.std, channels)
        if [round(m, 6) for m in mean] != [round(m, 6) for m in transform.mean] or [
            round(s, 6) for s in std
        ] != [round(s, 6) for s in transform.std]:
            lines.append(
                f"normalisation from the weights: mean {[round(m, 4) for m in mean]} std "
                f"{[round(s, 4) for s in std]} (the transform had mean "
                f"{[round(m, 4) for m in transform.mean]} std {[round(s, 4) for s in transform.std]})"
            )
            transform.renormalise(mean, std)
    if write:
        out = RunDir(run_dir)
        out.root.mkdir(parents=True, exist_ok=True)
        text = "\n".join(lines) + "\n"
        if not plan.adapted.fits:
            text += "\nkeys not loaded:\n" + plan.mismatch_report()
        out.init_from.write_text(text)
    return lines
