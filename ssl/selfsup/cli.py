"""The ``selfsup`` command: usage, the command table, and one line for every error.

Each command lives in :mod:`selfsup.commands` and is imported only when it runs, so
``selfsup --help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from selfsup.errors import ConfigError, TrainingStopped

USAGE = """usage: selfsup <command> [options]

commands:
  pretrain     pretrain a backbone from a YAML config (selfsup pretrain --config FILE [--key value ...])
  knn          weighted kNN accuracy of a checkpoint (selfsup knn --ckpt CKPT --data.path DATA)
  probe        linear probe on frozen features (selfsup probe --ckpt CKPT --data.path DATA)
  finetune     fine-tune the whole network (selfsup finetune --ckpt CKPT --data.path DATA)
  segment      linear segmentation on frozen patch features (selfsup segment --ckpt CKPT --data.path DATA)
  export       write the backbone as .safetensors, or a timm hub folder (--format timm-hub --out DIR)
  reconstruct  MAE reconstructions of images (selfsup reconstruct --ckpt CKPT --image IMG --out DIR)
  attention    ViT attention maps of images (selfsup attention --ckpt CKPT --image IMG... --out DIR)
  embed        2-D plot of test features by label (selfsup embed --ckpt CKPT --data.path DATA)
  launch       submit a SLURM job: launch pretrain --nodes N --gpus_per_node G ... -- --config FILE
               or an array of probes: launch probe --ckpt [CKPT,...] --data.path DATA ...
  summary      one table of the metrics.json files under sweep directories (selfsup summary DIR)
  data         what selfsup reads from DATA, and a preview grid (selfsup data inspect --data.path DATA)

Run 'selfsup <command> --help' for a command's options. One grammar everywhere:
--name value (underscores), --data.path/--data.window/... for the data, --config FILE
(a YAML of the options), --print_config; yes/no options take a value (--augment true),
lists one value in brackets (--k [20,200]).
"""

#: command -> (module in selfsup.commands, function, how it takes its arguments).
#: "argv": the function parses its own arguments; "options": its signature is the schema
#: (selfsup.commands.options.run_with_options).
COMMANDS = {
    "pretrain": ("pretrain", "pretrain", "argv"),
    "knn": ("evaluate", "knn", "options"),
    "probe": ("evaluate", "probe", "options"),
    "finetune": ("evaluate", "finetune", "options"),
    "segment": ("segment", "segment", "options"),
    "summary": ("evaluate", "summary", "options"),
    "export": ("export", "export", "options"),
    "attention": ("pictures", "attention", "options"),
    "reconstruct": ("pictures", "reconstruct", "options"),
    "embed": ("pictures", "embed", "options"),
    "launch": ("launch", "launch", "argv"),
    "data": ("data", "data", "argv"),
}


def run(command: str, argv: list[str]) -> int:
    module, name, style = COMMANDS[command]
    fn = getattr(importlib.import_module(f"selfsup.commands.{module}"), name)
    if style == "argv":
        return fn(argv)
    from selfsup.commands.options import run_with_options

    special = {"summary": {"positional": "dirs"}, "finetune": {"defaults": {"data.batch_size": 64}}}
    return run_with_options(f"selfsup {command}", fn, argv, **special.get(command, {}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        import selfsup

        print(f"selfsup {selfsup.__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        print(f"selfsup: unknown command {command!r}.{hint}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # `selfsup pretrain` hands its own arguments to LightningCLI on purpose.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    if (
        command == "finetune"
    ):  # the evaluator that builds a Lightning Trainer (pretrain's does this)
        from selfsup.train.loggers import quiet_lightning

        quiet_lightning()
    try:
        return run(command, rest)
    except ConfigError as e:
        print(f"selfsup {command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"selfsup {command}: stopped: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
