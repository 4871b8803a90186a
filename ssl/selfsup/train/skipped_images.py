"""The report of unreadable images that a run skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl

from selfsup.data.module import unwrap_dataset
from selfsup.distributed import gather_object_list
from selfsup.run_directory import RunDir


class SkippedImagesReport(pl.Callback):
    """Says how many unreadable images a run skipped: one warning line when new ones
    appear (count and a few names), ``data/skipped_images`` in the logged metrics,
    the full list with each file's reason (a DICOM transfer syntax nothing decodes, say)
    in ``RUN/skipped_images.txt``, and a last line when training ends."""

    def __init__(self) -> None:
        self.reported = 0

    def _gather(self, trainer: pl.Trainer) -> list[str]:
        source = unwrap_dataset(trainer.datamodule.train_dataset) if trainer.datamodule else None
        mine = source.skipped() if hasattr(source, "skipped") else []
        return sorted({f for files in gather_object_list(mine) for f in files})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        files = self._gather(trainer)
        if not trainer.is_global_zero or len(files) <= self.reported:
            return
        self.reported = len(files)
        source = unwrap_dataset(trainer.datamodule.train_dataset)
        lines = source.why_unreadable(files) if hasattr(source, "why_unreadable") else files
        RunDir(trainer.default_root_dir).skipped_images.write_text("\n".join(lines) + "\n")
        for logger in trainer.loggers:
            logger.log_metrics({"data/skipped_images": len(files)}, step=trainer.global_step)
        names = ", ".join(Path(f).name for f in files[:3]) + (", ..." if len(files) > 3 else "")
        print(
            f"selfsup: {len(files)} unreadable image(s) skipped so far, each replaced by the "
            f"next readable one ({names}; all in {trainer.default_root_dir}/skipped_images.txt). "
            "--data.strict true lists them before training instead.",
            file=sys.stderr,
            flush=True,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        files = self._gather(trainer)
        if trainer.is_global_zero and files:
            print(f"selfsup: the run skipped {len(files)} unreadable image(s).", file=sys.stderr)
