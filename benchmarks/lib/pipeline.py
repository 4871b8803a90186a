"""What feeds a training step: the DataLoader ``selfsup pretrain`` builds for a config, and
the images/s it delivers."""

from __future__ import annotations

import time

from .common import REPO


def datamodule(config: str, data: str, workers: int):
    from selfsup.train.run import build_pretrain_cli

    cli = build_pretrain_cli(["--config", str(REPO / config), "--data.path", data,
                              "--data.batch_size", "64", "--data.num_workers", str(workers),
                              "--trainer.accelerator", "cpu", "--trainer.logger", "false",
                              "--trainer.default_root_dir", "/tmp/selfsup-bench-data"])  # fmt: skip
    return cli.datamodule  # with the method's collate function (I-JEPA's masks) installed


def images_per_second(dm, batches: int) -> float:
    loader = iter(dm.train_dataloader())
    next(loader)  # worker start-up and first batch excluded
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * dm.batch_size / (time.perf_counter() - start)
