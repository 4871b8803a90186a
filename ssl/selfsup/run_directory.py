"""The layout of a run directory: one flat folder per run, which a restart resumes.

::

    RUN/config.yaml               resolved config of the run's first start (a resumed start
                                  with other values keeps it and appends the differences to
                                  RUN/config_changes.txt)
    RUN/checkpoints/last.ckpt     always the newest state (written atomically)
    RUN/hpc_ckpt_N.ckpt           Lightning's own pre-emption checkpoints, if some other
                                  setup wrote them (read on resume, removed once last.ckpt
                                  is newer)
    RUN/metrics.csv               every logged metric, kept across restarts
    RUN/status.json               where the run is: state, step, epoch, SLURM job, restarts
    RUN/init_from.txt             where the starting weights came from (init_from)
    RUN/skipped_images.txt        files the loader skipped as unreadable
    RUN/pictures/                 attention maps and reconstructions during training
    RUN/wandb/, RUN/wandb_id.txt  the wandb run, when wandb is on
    RUN/pretrain.sbatch           the SLURM job that runs it (selfsup launch)
    RUN/eval/<task>-<data>/       every evaluation of the run's checkpoints

:class:`RunDir` is the one place these paths are built; everything that reads or writes
inside a run directory asks it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """The paths of the run directory ``root``."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    CHECKPOINTS = "checkpoints"
    LAST = "last.ckpt"
    HPC_PATTERN = "hpc_ckpt_*.ckpt"

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / self.LAST

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def config_changes(self) -> Path:
        return self.root / "config_changes.txt"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def init_from(self) -> Path:
        return self.root / "init_from.txt"

    @property
    def skipped_images(self) -> Path:
        return self.root / "skipped_images.txt"

    @property
    def pictures(self) -> Path:
        return self.root / "pictures"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id.txt"

    @property
    def job_script(self) -> Path:
        return self.root / "pretrain.sbatch"

    @property
    def evaluations(self) -> Path:
        return self.root / "eval"

    def evaluation(self, task: str, data: str) -> Path:
        """Where ``selfsup <task>`` on ``data`` writes: ``RUN/eval/<task>-<data's stem>``."""
        return self.evaluations / f"{task}-{Path(data).stem}"

    def hpc_checkpoints(self) -> list[Path]:
        return sorted(self.root.glob(self.HPC_PATTERN))

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint a restart could continue from that exists."""
        return [p for p in [self.last, *self.hpc_checkpoints()] if p.is_file()]

    def holds_run(self) -> bool:
        """Whether a run has written a checkpoint here (another run must not start here)."""
        return any(self.checkpoints.glob("*.ckpt")) or bool(self.hpc_checkpoints())

    def looks_like_run(self) -> bool:
        """A folder that selfsup wrote: it has the run's config or its evaluations."""
        return self.config.is_file() or self.evaluations.is_dir()

    @classmethod
    def of_checkpoint(cls, path: str | os.PathLike) -> RunDir | None:
        """The run directory a checkpoint file or run directory belongs to
        (``RUN/checkpoints/*.ckpt``, ``RUN/hpc_ckpt_N.ckpt``, ``RUN``); None for any other
        file (an export, a weights file). Symlinks are kept, so a linked run keeps its name."""
        path = Path(os.path.abspath(path))
        if path.is_dir():
            return cls(path)
        if path.parent.name == cls.CHECKPOINTS:
            return cls(path.parent.parent)
        if path.match(cls.HPC_PATTERN):
            return cls(path.parent)
        return None
