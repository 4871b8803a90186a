"""The ``selfsup`` command.

    selfsup pretrain --config configs/<method>/<name>.yaml [--data.path DATA] [--trainer.max_epochs N] ...
    selfsup knn      --ckpt CKPT --data DATA

``pretrain`` is a LightningCLI (every value printable with ``--print_config``,
saved as ``RUN/config.yaml``, overridable on the command line). Evaluation
commands take plain arguments and end their stdout with one JSON object whose
``top1`` is the headline figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigError, TrainingStopped

USAGE = """usage: selfsup <command> [options]

commands:
  pretrain     pretrain a backbone from a YAML config (selfsup pretrain --config FILE [--key value ...])
  knn          weighted kNN accuracy of a checkpoint (selfsup knn --ckpt CKPT --data DATA)
  probe        linear probe on frozen features (selfsup probe --ckpt CKPT --data DATA)
  finetune     fine-tune the whole network (selfsup finetune --ckpt CKPT --data DATA)
  export       write the backbone as .safetensors (selfsup export --ckpt CKPT --out FILE)
  reconstruct  MAE reconstructions of images (selfsup reconstruct --ckpt CKPT --image IMG --out DIR)
  attention    ViT attention maps of images (selfsup attention --ckpt CKPT --image IMG... --out DIR)
  embed        2-D plot of test features by label (selfsup embed --ckpt CKPT --data DATA --out P.png)
  launch       submit a SLURM job: launch pretrain --config FILE --nodes N --gpus-per-node G ...
               or an array of probes: launch probe --ckpt CKPT [CKPT ...] --data DATA ...
  summary      one table of the metrics.json files under sweep directories (selfsup summary DIR)

Run 'selfsup <command> --help' for a command's options.
"""


# --------------------------------------------------------------------------- pretrain
def _pretrain_cli_class():
    # Imported lazily so that `selfsup --help` and argument errors answer at once.
    from lightning_fabric.plugins import CheckpointIO
    from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
    from pytorch_lightning.accelerators import CPUAccelerator
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

    from selfsup.backbones import check_input_size
    from selfsup.data.module import PretrainDataModule
    from selfsup.methods.base import SelfSupervisedMethod
    from selfsup.methods.teacher import TeacherStudentMethod
    from selfsup.train.collapse_monitor import CollapseMonitor
    from selfsup.train.knn_monitor import KNNMonitor
    from selfsup.train.pictures import PictureLogger
    from selfsup.train.rundir import (
        AtomicCheckpointIO,
        GracefulStop,
        RunCSVLogger,
        RunStatus,
        checkpoint_callback,
    )
    from selfsup.train.skipped_images import SkippedImagesReport

    class PretrainCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument(
                "--resume",
                type=str,
                default="auto",
                help="auto: continue from the run directory's newest checkpoint if there is one; "
                "never: start from scratch; or a checkpoint path.",
            )
            parser.add_argument(
                "--checkpoint_every_n_steps",
                type=int | None,
                default=None,
                help="also write last.ckpt every N optimizer steps (default: each epoch end)",
            )
            parser.add_argument(
                "--wandb", type=bool, default=False, help="log to Weights & Biases too"
            )
            parser.add_argument("--wandb_project", type=str, default="selfsup")
            parser.add_argument(
                "--status_interval",
                type=float,
                default=5.0,
                help="seconds between rewrites of RUN/status.json during training",
            )
            parser.add_lightning_class_args(KNNMonitor, "knn_monitor")
            parser.add_lightning_class_args(CollapseMonitor, "collapse_monitor")
            parser.add_lightning_class_args(PictureLogger, "pictures")

        def before_instantiate_classes(self) -> None:
            trainer = self.config.trainer
            check_slurm_shape(trainer.devices, trainer.num_nodes)
            if trainer.default_root_dir is None:
                configs = self.config.get("config") or []
                stem = Path(str(configs[0])).stem if configs else "pretrain"
                trainer.default_root_dir = os.path.join("runs", stem)

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
            run_dir = config["default_root_dir"]
            if config.get("logger") in (None, True):
                loggers: list[Any] = [RunCSVLogger(run_dir)]
                if self.config.wandb:
                    loggers.append(_wandb_logger(run_dir, self.config.wandb_project))
                config["logger"] = loggers
            if config.get("enable_checkpointing", True) is not False:
                callbacks = [
                    *callbacks,
                    checkpoint_callback(run_dir, self.config.checkpoint_every_n_steps),
                    GracefulStop(run_dir),
                ]
                plugins = config.get("plugins") or []
                plugins = plugins if isinstance(plugins, list) else [plugins]
                if not any(isinstance(p, CheckpointIO) for p in plugins):
                    plugins = [*plugins, AtomicCheckpointIO()]
                # GracefulStop handles SLURM's USR1 (checkpoint, requeue) at a step end on
                # every process; Lightning's own handler must not act as well.
                if SLURMEnvironment.detect() and not any(
                    isinstance(p, ClusterEnvironment) for p in plugins
                ):
                    plugins = [*plugins, SLURMEnvironment(auto_requeue=False)]
                config["plugins"] = plugins
            callbacks = [
                *callbacks,
                RunStatus(run_dir, self.config.status_interval),
                SkippedImagesReport(),
                LearningRateMonitor(logging_interval="step"),
            ]
            return super()._instantiate_trainer(config, callbacks)

        def check_run(self) -> None:
            """Everything that can be checked before training starts."""
            model, data, trainer = self.model, self.datamodule, self.trainer
            backbone = model.backbone
            if data.transform is not None:
                for size in sorted(set(data.transform.view_sizes)):
                    check_input_size(backbone, size)
                    model.check_view_size(size)
            data.check(world_size=trainer.world_size)
            channels = data.data_channels()
            if channels != backbone.in_chans:
                raise ConfigError(
                    f"The images have {channels} channel(s) but the backbone takes {backbone.in_chans}: "
                    f"set model.init_args.backbone_kwargs.in_chans: {channels}, or data.channels: {backbone.in_chans}."
                )
            if len(data.transform.mean) != channels or len(data.transform.std) != channels:
                raise ConfigError(
                    f"The transform normalises {len(data.transform.mean)} channel(s) but the images have {channels}: "
                    f"give transform mean/std with {channels} value(s)."
                )
            if str(self.config.trainer.precision) == "bf16-true" and isinstance(
                model, TeacherStudentMethod
            ):
                raise ConfigError(
                    f"{type(model).__name__}'s EMA teacher needs fp32 weights: with bf16-true an update of "
                    "1 - momentum vanishes below bf16's resolution. Use --trainer.precision bf16-mixed."
                )
            if self.config.trainer.sync_batchnorm and isinstance(
                trainer.accelerator, CPUAccelerator
            ):
                raise ConfigError(
                    "trainer.sync_batchnorm needs GPUs (SyncBatchNorm has no CPU kernel): drop it for CPU runs."
                )

    return PretrainCLI, SelfSupervisedMethod, PretrainDataModule


def _wandb_logger(run_dir: str, project: str):
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
    id_file = Path(run_dir) / "wandb_id.txt"
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


def _finish_wandb(trainer: Any) -> None:
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


def build_pretrain_cli(argv: list[str], resolve_only: bool = False) -> Any:
    """Parse ``selfsup pretrain`` arguments and instantiate model, data and trainer (no
    training); with ``resolve_only``, parse and pin the seed without instantiating."""
    PretrainCLI, Method, DataModule = _pretrain_cli_class()
    if resolve_only:

        class PretrainCLI(PretrainCLI):  # the same CLI, minus instantiation
            def instantiate_classes(self) -> None:
                pass

    cli = PretrainCLI(
        Method,
        DataModule,
        subclass_mode_model=True,
        run=False,
        args=argv,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "selfsup pretrain"},
        trainer_defaults={"log_every_n_steps": 10},
    )
    return cli


def resolve_pretrain_config(argv: list[str]) -> tuple[str, int]:
    """The YAML of every value ``selfsup pretrain ARGV`` would run with (the seed pinned:
    LightningCLI draws one when ``seed_everything`` is true), and the per-process batch
    size. Nothing is built, so this works where the job's GPUs are absent."""
    cli = build_pretrain_cli(argv, resolve_only=True)
    return cli.parser.dump(cli.config, skip_none=False), int(cli.config.data.batch_size)


def check_slurm_shape(devices: Any, num_nodes: Any) -> None:
    """Inside a SLURM job (as Lightning detects one), trainer.devices must equal the
    tasks per node and trainer.num_nodes the nodes: one task per GPU."""
    env = os.environ
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return
    per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
    nodes = env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES")
    if str(devices).isdigit() and per_node.isdigit() and int(devices) != int(per_node):
        raise ConfigError(
            f"trainer.devices is {devices} but the SLURM job runs {per_node} task(s) per node: "
            f"use --trainer.devices {per_node}, or submit with --ntasks-per-node={devices} "
            "(one task per GPU; `selfsup launch pretrain` sets both)."
        )
    if nodes and str(nodes).isdigit() and int(num_nodes) != int(nodes):
        raise ConfigError(
            f"trainer.num_nodes is {num_nodes} but the SLURM job has {nodes} node(s): "
            f"use --trainer.num_nodes {nodes}, or submit with --nodes={num_nodes}."
        )


METHODS = ("SimCLR", "Triplet", "BYOL", "DINO", "MAE", "IJEPA")


def check_method(argv: list[str]) -> None:
    """The method named by the configs or ``--model[.class_path]``, checked before
    LightningCLI parses (whose error for a typo is a page of union-type noise)."""
    import difflib

    import yaml

    names: list[str] = []
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config" and Path(argv[i + 1]).is_file():
            model = (yaml.safe_load(Path(argv[i + 1]).read_text()) or {}).get("model")
            if isinstance(model, dict) and model.get("class_path"):
                names.append(str(model["class_path"]))
            elif isinstance(model, str):
                names.append(model)
        elif arg in ("--model", "--model.class_path"):
            names.append(argv[i + 1])
    if not names:
        return
    name = names[-1].rsplit(".", 1)[-1]
    if name in METHODS:
        return
    close = difflib.get_close_matches(name, METHODS, n=2, cutoff=0.4)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown method {names[-1]!r}: selfsup's methods are {', '.join(METHODS)} "
        f"(model.class_path: selfsup.methods.<Method>).{hint}"
    )


def _config_error_in(error: BaseException) -> ConfigError | None:
    """The ConfigError that jsonargparse wrapped (it reports a failed constructor as
    'Does not validate against any of the Union subtypes')."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, ConfigError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def pretrain(argv: list[str]) -> int:
    from selfsup.train.rundir import newest_checkpoint

    check_method(argv)
    try:
        cli = build_pretrain_cli(argv)
    except (ValueError, TypeError) as e:
        cause = _config_error_in(e)
        if cause is None:
            raise
        raise ConfigError(str(cause)) from None
    cli.check_run()
    run_dir = cli.trainer.default_root_dir
    resume = cli.config.resume
    if resume == "auto":
        ckpt_path = newest_checkpoint(run_dir)
    elif resume == "never":
        ckpt_path = None
    else:
        ckpt_path = Path(resume)
        if not ckpt_path.is_file():
            raise ConfigError(
                f"--resume {resume}: no such checkpoint (use auto, never or a .ckpt path)."
            )
    if ckpt_path is not None and cli.trainer.is_global_zero:
        print(f"selfsup: resuming from {ckpt_path}", file=sys.stderr)
    try:
        cli.trainer.fit(
            cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None
        )
    finally:
        _finish_wandb(cli.trainer)
    if cli.trainer.is_global_zero:
        print(f"selfsup: run directory {run_dir}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- evaluation
def _print_result(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _eval_parser(prog: str, description: str, cache: bool = True) -> argparse.ArgumentParser:
    """Arguments every frozen-feature evaluator shares."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint file, run directory or .safetensors export"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="an .npz, an image folder with train/ and test/, or a named set",
    )
    parser.add_argument(
        "--backbone",
        choices=["student", "teacher"],
        default=None,
        help="default: the method's choice",
    )
    parser.add_argument(
        "--pool", choices=["cls", "avg"], default=None, help="ViTs; default: the method's choice"
    )
    parser.add_argument(
        "--timm-model",
        default=None,
        help="--ckpt is a weights file of this timm ResNet/ViT (e.g. vit_small_patch16_224)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--root", default=None, help="where named datasets are stored")
    if cache:
        parser.add_argument(
            "--no-cache", action="store_true", help="extract features again (and do not store them)"
        )
    parser.add_argument(
        "--devices", type=int, default=1, help="processes (GPUs, or CPU processes) for extraction"
    )
    parser.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    parser.add_argument(
        "--config",
        default=None,
        help="a YAML of these options (e.g. configs/eval/*.yaml); flags override it",
    )
    return parser


def _parse_eval_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse with defaults from ``--config FILE`` (keys are the option names, - or _)."""
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        import yaml

        path = Path(pre.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file.")
        values = yaml.safe_load(path.read_text()) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(k for k in values if k.replace("-", "_") not in known)
        if unknown:
            raise ConfigError(
                f"{path}: unknown option(s) {', '.join(unknown)} for {parser.prog}; see {parser.prog} --help."
            )
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})
    return parser.parse_args(argv)


def _start_processes(devices: int, accelerator: str) -> tuple[Any, Any]:
    """Lightning Fabric's DDP launch when more than one process is asked for (or SLURM
    started several): the other ranks re-run this command. Returns (fabric, device)."""
    import torch

    if devices <= 1 and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        use_gpu = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
        return None, torch.device("cuda" if use_gpu else "cpu")
    from lightning_fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp")
    fabric.launch()
    return fabric, fabric.device


def knn(argv: list[str]) -> int:
    parser = _eval_parser("selfsup knn", "Weighted kNN (cosine) top-1 of a checkpoint.")
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[20, 200],
        help="neighbours; the first is the headline (default 20 200)",
    )
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument(
        "--out", default=None, help="evaluation directory (metrics.json, confusion matrix)"
    )
    args = _parse_eval_args(parser, argv)

    from selfsup.eval.knn import run_knn
    from selfsup.eval.loading import load_backbone

    loaded = load_backbone(args.ckpt, args.backbone, args.pool, timm_model=args.timm_model)
    fabric, device = _start_processes(args.devices, args.accelerator)
    result, classes = run_knn(
        loaded, args.data, tuple(args.k), args.temperature, args.batch_size,
        args.num_workers, args.root, not args.no_cache, device,
    )  # fmt: skip
    if fabric is None or fabric.is_global_zero:
        _report(result, classes, _eval_dir(args.ckpt, "knn", args.data, args.out))
    return 0


def _report(result: dict[str, Any], classes: list[str], out: Path) -> None:
    """metrics.json and confusion_matrix.png in ``out``; the JSON line (without the matrix)."""
    from selfsup.eval.metrics import save_confusion_matrix

    out.mkdir(parents=True, exist_ok=True)
    confusion = result.pop("confusion_matrix")
    names = classes if len(classes) == len(confusion) else [str(i) for i in range(len(confusion))]
    save_confusion_matrix(confusion, names, out / "confusion_matrix.png")
    (out / "metrics.json").write_text(
        json.dumps({**result, "confusion_matrix": confusion}, indent=2)
    )
    result["eval_dir"] = str(out)
    _print_result(result)


def _eval_dir(ckpt: str, task: str, data: str, out: str | None) -> Path:
    """Where an evaluation writes: --out, else beside the run (RUN/eval/<task>-<data>)."""
    if out:
        return Path(out)
    path = Path(ckpt)
    run = path if path.is_dir() else path.parent
    if run.name == "checkpoints":
        run = run.parent
    return run / "eval" / f"{task}-{Path(data).stem}"


def probe(argv: list[str]) -> int:
    parser = _eval_parser(
        "selfsup probe",
        "Linear probe on frozen, cached features (a grid of heads, picked on a validation split).",
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train on new random crops and flips through the frozen backbone every epoch "
        "(one backbone pass per epoch) instead of on the cached features",
    )
    parser.add_argument(
        "--last-blocks",
        type=int,
        default=1,
        help="ViTs: concatenate the pooled tokens of the last K blocks (DINO: 4 for ViT-S)",
    )
    parser.add_argument(
        "--avgpool-patches",
        action="store_true",
        help="ViTs with CLS pooling: append the last block's mean patch token (DINO: ViT-B)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=None, help="evaluation directory (metrics.json, confusion matrix)"
    )
    args = _parse_eval_args(parser, argv)
    if not 0 < args.val_fraction < 1:
        raise ConfigError(
            f"--val-fraction {args.val_fraction}: give a fraction in (0, 1), e.g. 0.1."
        )

    from selfsup.eval.features import block_features, labelled_features
    from selfsup.eval.loading import load_backbone
    from selfsup.eval.probe import run_probe, run_probe_augmented

    loaded = load_backbone(args.ckpt, args.backbone, args.pool, timm_model=args.timm_model)
    loaded = block_features(loaded, args.last_blocks, args.avgpool_patches)
    fabric, device = _start_processes(args.devices, args.accelerator)
    train_f, train_y, test_f, test_y, classes = labelled_features(
        loaded, args.data, "the linear probe", args.batch_size, args.num_workers,
        args.root, not args.no_cache, device,
    )  # fmt: skip
    if args.augment:
        from selfsup.data.datasets import open_dataset
        from selfsup.eval.finetune import train_transform
        from selfsup.eval.probe import SeededViews

        views = SeededViews(
            open_dataset(args.data, "train", args.root), train_transform(loaded), args.seed
        )
        # Every process takes part in the backbone passes and takes the same head steps.
        result = run_probe_augmented(
            loaded.backbone, views, train_f, train_y, test_f, test_y, classes,
            args.val_fraction, args.epochs, args.batch_size, seed=args.seed,
            num_workers=args.num_workers, device=device,
        )  # fmt: skip
    elif fabric is None or fabric.is_global_zero:
        result = run_probe(train_f, train_y, test_f, test_y, classes, args.val_fraction,
                           args.epochs, seed=args.seed)  # fmt: skip
    if fabric is not None and not fabric.is_global_zero:
        return 0  # features are on every rank; rank 0 reports
    result.update(
        backbone=loaded.meta["loaded"], pool=loaded.meta["pool"],
        features=loaded.meta.get("features", "pooled"), checkpoint=loaded.path,
    )  # fmt: skip
    _report(result, classes, _eval_dir(args.ckpt, "probe", args.data, args.out))
    return 0


def reconstruct(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="selfsup reconstruct",
        description="MAE: write original | masked | reconstruction panels as PNG, one file per image.",
    )
    parser.add_argument("--ckpt", required=True, help="an MAE checkpoint file or run directory")
    parser.add_argument("--image", required=True, nargs="+", help="image files (PNG, JPEG, TIFF)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--upscale", type=int, default=None, help="pixel repeat per panel (default: >= 96 px)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random mask")
    args = parser.parse_args(argv)

    from selfsup.viz.reconstruct import write_reconstructions

    _print_result(write_reconstructions(args.ckpt, args.image, args.out, args.upscale, args.seed))
    return 0


def finetune(argv: list[str]) -> int:
    parser = _eval_parser(
        "selfsup finetune",
        "Fine-tune the whole network on labels (layer-wise lr decay, mixup/cutmix, label smoothing).",
        cache=False,
    )
    parser.set_defaults(batch_size=64)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3, help="per 256 images")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--layer-decay", type=float, default=0.75, help="ViTs: 0.65-0.75")
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--mixup", type=float, default=0.8)
    parser.add_argument("--cutmix", type=float, default=1.0)
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=5.0)
    parser.add_argument("--precision", default="32", help="32, bf16-mixed, 16-mixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="evaluation directory")
    args = _parse_eval_args(parser, argv)

    import pytorch_lightning as pl

    from selfsup.data.datasets import open_dataset
    from selfsup.data.module import TransformedDataset
    from selfsup.eval.features import extract_features
    from selfsup.eval.finetune import Classifier, FineTune, train_loader
    from selfsup.eval.loading import load_backbone
    from selfsup.eval.metrics import classification_metrics

    loaded = load_backbone(
        args.ckpt, args.backbone, args.pool, {"drop_path_rate": args.drop_path}, args.timm_model
    )
    train = open_dataset(args.data, "train", args.root)
    test = open_dataset(args.data, "test", args.root)
    if train.targets is None or test.targets is None:
        raise ConfigError(
            f"{args.data} has no labels: fine-tuning needs labelled train and test splits."
        )
    num_classes = max(len(train.classes), int(max(train.targets)) + 1)
    pl.seed_everything(args.seed, verbose=False)
    classifier = Classifier(loaded.backbone.train(), num_classes)
    module = FineTune(
        classifier, num_classes, args.lr, args.weight_decay, args.layer_decay,
        args.warmup_epochs, args.mixup, args.cutmix, args.smoothing, args.batch_size,
    )  # fmt: skip
    out = _eval_dir(args.ckpt, "finetune", args.data, args.out)
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", precision=args.precision,
        logger=pl.loggers.CSVLogger(str(out), name="", version=""), enable_checkpointing=False,
        default_root_dir=str(out), enable_model_summary=False, log_every_n_steps=10,
    )  # fmt: skip
    trainer.fit(
        module, train_dataloaders=train_loader(train, loaded, args.batch_size, args.num_workers)
    )
    # Test logits, each image once, in dataset order, on every process.
    logits, labels = extract_features(
        classifier.eval(), TransformedDataset(test, loaded.eval_transform()),
        args.batch_size, args.num_workers, module.device,
    )  # fmt: skip
    if not trainer.is_global_zero:
        return 0
    result = {"task": "finetune", **classification_metrics(logits, labels, list(train.classes))}
    result.update(
        epochs=args.epochs, lr=args.lr, layer_decay=args.layer_decay, drop_path=args.drop_path,
        mixup=args.mixup, cutmix=args.cutmix, smoothing=args.smoothing, n_train=len(train),
        n_test=len(labels), backbone=loaded.meta["loaded"], checkpoint=loaded.path,
    )  # fmt: skip
    _report(result, list(train.classes), out)
    return 0


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="selfsup export",
        description="Write a checkpoint's backbone as .safetensors, with what rebuilds it in the metadata.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run directory")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument(
        "--backbone",
        choices=["student", "teacher"],
        default=None,
        help="default: the method's choice",
    )
    parser.add_argument(
        "--pool", choices=["cls", "avg"], default=None, help="ViTs; default: the method's choice"
    )
    args = parser.parse_args(argv)

    from selfsup.export import export_backbone

    _print_result(export_backbone(args.ckpt, args.out, args.backbone, args.pool))
    return 0


def attention(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="selfsup attention",
        description="A ViT's last-block attention maps (every head, their mean, the thresholded "
        "mask) for images of any size, as PNGs and one overview grid.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint file, run directory or export")
    parser.add_argument("--image", required=True, nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--threshold", type=float, default=0.6, help="share of attention mass the mask keeps"
    )
    parser.add_argument("--backbone", choices=["student", "teacher"], default=None,
                        help="default: the method's choice")  # fmt: skip
    parser.add_argument(
        "--size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="resize to H x W (default: shorter side = the training size, aspect kept)",
    )  # fmt: skip
    parser.add_argument("--timm-model", default=None, help="--ckpt is a timm weights file")
    args = parser.parse_args(argv)

    from selfsup.eval.loading import load_backbone
    from selfsup.viz.attention import write_attention

    loaded = load_backbone(args.ckpt, args.backbone, timm_model=args.timm_model)
    size = tuple(args.size) if args.size else None
    _print_result(write_attention(loaded, args.image, args.out, args.threshold, size))
    return 0


def embed(argv: list[str]) -> int:
    parser = _eval_parser(
        "selfsup embed", "A 2-D map (UMAP where installed, else t-SNE) of test-set features."
    )
    parser.add_argument("--out", required=True, help="the plot (.png)")
    parser.add_argument("--method", choices=["auto", "tsne", "umap"], default="auto")
    parser.add_argument("--max-points", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = _parse_eval_args(parser, argv)

    from selfsup.data.datasets import open_dataset
    from selfsup.eval.features import cached_features
    from selfsup.eval.loading import load_backbone
    from selfsup.viz.embed import plot_embedding

    loaded = load_backbone(args.ckpt, args.backbone, args.pool, timm_model=args.timm_model)
    fabric, device = _start_processes(args.devices, args.accelerator)
    test = open_dataset(args.data, "test", args.root)
    if test.targets is None:
        raise ConfigError(f"{args.data} has no test labels: the plot colours points by label.")
    feats, labels, _ = cached_features(loaded, args.data, "test", test, args.batch_size,
                                       args.num_workers, not args.no_cache, device)  # fmt: skip
    if fabric is not None and not fabric.is_global_zero:
        return 0
    title = f"{loaded.meta['method']} {loaded.meta['backbone']}"
    result = plot_embedding(feats, labels, list(test.classes), args.out, args.method,
                            args.max_points, args.seed, title)  # fmt: skip
    _print_result({**result, "checkpoint": loaded.path})
    return 0


def _launch(argv: list[str]) -> int:
    from selfsup.commands.launch import launch

    return launch(argv)


def _summary(argv: list[str]) -> int:
    from selfsup.commands.launch import summary

    return summary(argv)


COMMANDS = {
    "pretrain": pretrain,
    "knn": knn,
    "probe": probe,
    "finetune": finetune,
    "reconstruct": reconstruct,
    "export": export,
    "attention": attention,
    "embed": embed,
    "launch": _launch,
    "summary": _summary,
}


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
        print(f"selfsup: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # `selfsup pretrain` hands its own arguments to LightningCLI on purpose.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    try:
        return COMMANDS[command](rest)
    except ConfigError as e:
        print(f"selfsup {command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"selfsup {command}: stopped: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
