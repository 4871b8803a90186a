"""``selfsup pretrain --config FILE [--key value ...]``: check, assemble, resume, fit.

The order matters: the config files and the method's name are checked before
LightningCLI parses (one line instead of a page of usage); the checkpoint to resume is
found and read as soon as the arguments are parsed, before Lightning prints anything
(:mod:`selfsup.train.resume`); the run is assembled and checked
(:mod:`selfsup.train.run`) and the checkpoint compared with it; only then does training
start, and with it the first write into the run directory.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from selfsup.commands.options import check_data_spelling, check_yaml, config_files
from selfsup.errors import ConfigError


def check_method_name(argv: list[str]) -> None:
    """The method named by the configs or ``--model[.class_path]`` must exist; the
    registry's error names close matches."""
    from selfsup.methods import method_class

    names: list[str] = []
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config":
            model = check_yaml(argv[i + 1]).get("model")
            if isinstance(model, dict) and model.get("class_path"):
                names.append(str(model["class_path"]))
            elif isinstance(model, str):
                names.append(model)
        elif arg in ("--model", "--model.class_path"):
            names.append(argv[i + 1])
    if names:
        method_class(names[-1])


def pretrain(argv: list[str]) -> int:
    import pytorch_lightning as pl

    from selfsup.train.loggers import finish_wandb
    from selfsup.train.resume import check_same_run
    from selfsup.train.run import build_pretrain_cli

    for path in config_files(argv):
        check_yaml(path)
    check_data_spelling(argv, "selfsup pretrain")
    check_method_name(argv)
    cli = build_pretrain_cli(argv)
    cli.check_run()
    run_dir = cli.trainer.default_root_dir
    ckpt_path = cli.ckpt_path
    if ckpt_path is not None:
        record, step = check_same_run(ckpt_path, cli.model, cli.config.run_name, run_dir)
        seed = record.get("seed")
        if seed is not None and str(seed) != os.environ.get("PL_GLOBAL_SEED"):
            # The run's data order, views and masks follow its seed: keep the first start's.
            pl.seed_everything(seed, verbose=False)
            _say(cli, f"selfsup: the resumed run keeps its seed {seed}")
        cli.run_config.resumed_step = step
        _say(cli, f"selfsup: resuming from {ckpt_path} (step {step})")
    elif cli.model.hparams.get("init_from"):
        from selfsup.train.starting_weights import prepare_starting_weights

        for line in prepare_starting_weights(cli.model, cli.datamodule, run_dir,
                                             cli.trainer.is_global_zero):  # fmt: skip
            _say(cli, f"selfsup: init {line}")
    try:
        cli.trainer.fit(
            cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None
        )
    finally:
        finish_wandb(cli.trainer)
    _say(cli, f"selfsup: run directory {run_dir}")
    return 0


def _say(cli: Any, message: str) -> None:
    if cli.trainer.is_global_zero:
        print(message, file=sys.stderr, flush=True)


def resolve_pretrain_config(argv: list[str]) -> tuple[str, int]:
    """The YAML of every value ``selfsup pretrain ARGV`` would run with (the seed and the
    run's name pinned), and the per-process batch size. Nothing is built, so this works
    where the job's GPUs are absent."""
    from selfsup.train.run import build_pretrain_cli

    for path in config_files(argv):
        check_yaml(path)
    check_data_spelling(argv, "selfsup pretrain")
    check_method_name(argv)
    cli = build_pretrain_cli(argv, resolve_only=True)
    if cli.config.get("data") is None:
        raise ConfigError("The config has no data section: give --data.path DATA.")
    return cli.parser.dump(cli.config, skip_none=False), int(cli.config.data.batch_size)
