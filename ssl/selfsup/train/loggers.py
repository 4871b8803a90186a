"""The run's loggers: metrics.csv in the run directory, and wandb when asked for; and
what Lightning's own logging may print (:func:`quiet_lightning`)."""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from selfsup.run_directory import RunDir


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts, which
    would lose a resumed run's history; this one keeps it and continues its columns."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)


class RunCSVLogger(CSVLogger):
    """CSV logger writing ``RUN/metrics.csv`` directly (no ``lightning_logs/version_N``)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


#: Lightning's info lines that every run printed and none needs: which accelerators
#: exist (the run's own device is in its config), adverts for Lightning's cloud products,
#: and the TF32 hint (selfsup's configs train in bf16).
LIGHTNING_CHATTER = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:",
                     "You are using a CUDA device")  # fmt: skip


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LIGHTNING_CHATTER)


def quiet_lightning() -> None:
    """Drop :data:`LIGHTNING_CHATTER` from Lightning's console output. Its warnings, and
    the info lines worth reading, pass: those include selfsup's kNN monitor figures, which
    share the logger (``rank_zero_info``), so the logger keeps its level and a filter drops
    the chatter by its words. Idempotent; a no-op on lines a Lightning version lacks."""
    # rank_zero_info() logs through whichever of these two was imported last.
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropChatter) for f in logger.filters):
            logger.addFilter(_DropChatter())
    # Its one line, each process's "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]", is info.
    logging.getLogger("pytorch_lightning.accelerators.cuda").setLevel(logging.WARNING)


def wandb_logger(run_dir: str, project: str):
    from pytorch_lightning.loggers import WandbLogger
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    # Never a login prompt: without credentials the run logs offline.
    os.environ.setdefault("WANDB_SILENT", "true")
    if "WANDB_MODE" not in os.environ and not _wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
        if rank_zero_only.rank == 0:
            print(
                f"selfsup: wandb is not logged in; logging offline to {run_dir}/wandb "
                "(upload later with `wandb sync`).",
                file=sys.stderr,
            )
    # The run id lives in the run directory, so a restarted run continues the same curves.
    id_file = RunDir(run_dir).wandb_id
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        import secrets

        run_id = secrets.token_hex(4)  # wandb run ids: lowercase letters and digits
        if rank_zero_only.rank == 0:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id)
    logger = WandbLogger(
        project=project, save_dir=run_dir, name=Path(run_dir).name, id=run_id, resume="allow"
    )
    return logger


def finish_wandb(trainer: Any) -> None:
    """End this run's wandb run (Lightning leaves it open): the next run in the same
    process (a notebook, a sweep) must start its own, not log into this one."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        hosts = netrc.netrc().hosts
        return any("wandb" in host for host in hosts)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
