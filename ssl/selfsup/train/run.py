"""Assembling a pretraining run: LightningCLI with selfsup's run directory, callbacks and checks.

``build_pretrain_cli(argv)`` parses ``selfsup pretrain`` arguments (every value
printable with ``--print_config``, saved as ``RUN/config.yaml``, overridable on the
command line) and instantiates the method, the DataModule and the Trainer with:
the run directory's logger and atomic checkpoints, the stop signals, the status file,
the kNN, collapse, picture and skipped-images callbacks, and the loader hook the
method declares (:meth:`~selfsup.methods.base.SelfSupervisedMethod.train_collate_fn`).
What needs only the arguments is checked as soon as they are parsed, before Lightning
says anything (the SLURM job's shape, the checkpoint to resume); ``check_run`` then
checks everything else that can be checked before training starts.

On a CPU the run is sized to the hardware it finds: a bf16 config trains in fp32 where
the CPU has no native bf16 (:func:`~selfsup.precision.cpu_precision`), and a config's
``cpu_fp32`` options (its budget for fp32 on a CPU, where a step takes several times as
long as in bf16 on a CPU with native bf16 or on a GPU) replace its own there. Both are
decided before ``RUN/config.yaml`` is written, which records what ran.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_only

from selfsup.backbones import check_input_size
from selfsup.data.module import PretrainDataModule
from selfsup.data.summary import describe, one_line
from selfsup.errors import ConfigError
from selfsup.methods import TeacherStudentMethod, method_class
from selfsup.methods.base import SelfSupervisedMethod
from selfsup.precision import cpu_precision, is_fp32, runs_on_cpu
from selfsup.train.collapse_monitor import CollapseMonitor
from selfsup.train.knn_monitor import KNNMonitor
from selfsup.train.loggers import RunCSVLogger, quiet_lightning, wandb_logger
from selfsup.train.pictures import PictureLogger
from selfsup.train.resume import checkpoint_to_resume
from selfsup.train.rundir import (
    AtomicCheckpointIO,
    RunCheckpoint,
    RunConfig,
    RunIdentity,
    RunStatus,
)
from selfsup.train.signals import GracefulStop
from selfsup.train.skipped_images import SkippedImagesReport


class PretrainCLI(LightningCLI):
    #: False where the config is only resolved, not run here (``selfsup launch``): what
    #: depends on this machine (precision, the cpu_fp32 budget, the checkpoint to resume)
    #: is then decided where the run starts.
    runs_here = True
    #: The checkpoint this start resumes from (``--resume``), found and read at parse time.
    ckpt_path: Path | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--resume",
            type=str,
            default="auto",
            help="auto: continue from the run directory's newest checkpoint if there is one; "
            "never: start from scratch; or a checkpoint path or run directory.",
        )
        parser.add_argument(
            "--cpu_fp32",
            type=dict[str, Any] | None,
            default=None,
            help="options and values, as on the command line without the dashes (e.g. "
            "{trainer.max_epochs: 1}), that replace the config's when the run trains in fp32 "
            "on a CPU (one without native bf16, or --trainer.precision 32-true): the config's "
            "budget for that speed. An option given on the command line wins; null trains "
            "the config's own values.",
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="the run's name, recorded in its checkpoints: a run directory resumes only a "
            "run of the same name (default: <method>/<config name>; the run directory "
            "defaults to runs/<run_name>)",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="also write last.ckpt every N optimizer steps (default: each epoch end)",
        )
        parser.add_argument("--wandb", type=bool, default=False, help="log to Weights & Biases too")
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
        # The learning rate scales with the per-process batch: one value, two places.
        parser.link_arguments("data.batch_size", "model.init_args.batch_size")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            raise ConfigError(explain_parse_error(str(e), parser)) from None
        self.budget_line = None
        if self.runs_here and isinstance(args, (list, tuple)):
            flags, self.budget_line = cpu_fp32_flags(self.config, list(args))
            if flags:  # parsed again, so that links (the batch size's) follow the budget
                super().parse_arguments(parser, [*args, *flags])
        config = self.config
        if config.run_name is None:
            configs = config.get("config") or []
            config.run_name = default_run_name(configs[0] if configs else None,
                                               str(config.model.class_path))  # fmt: skip
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = os.path.join("runs", config.run_name)
        # What needs only the arguments fails here, as one line, before Lightning's first
        # (the seed) and before the Trainer and the data are built.
        check_slurm_shape(config.trainer.devices, config.trainer.num_nodes)
        if self.runs_here:
            self.ckpt_path = checkpoint_to_resume(config.resume, config.trainer.default_root_dir)

    def before_instantiate_classes(self) -> None:
        config = self.config
        self.asked_precision = config.trainer.precision
        if not self.runs_here:
            return
        # Before the config is saved with the run: RUN/config.yaml says what ran. What
        # was asked is still checked (check_run), so a config fails the same everywhere.
        config.trainer.precision, why = cpu_precision(config.trainer.precision,
                                                      config.trainer.accelerator)  # fmt: skip
        for line in (why, self.budget_line):
            if line:
                rank_zero_only(print)(line, file=sys.stderr, flush=True)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # What the checkpoints record of the data: the size and normalisation evaluators use.
        self.model.data_view = self.datamodule.transform
        # What the method needs from the training loader (I-JEPA, DINOv2: mask collators).
        self.datamodule.collate_fn = self.model.train_collate_fn()

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        run_dir = config["default_root_dir"]
        if config.get("logger") in (None, True):
            loggers: list[Any] = [RunCSVLogger(run_dir)]
            if self.config.wandb:
                loggers.append(wandb_logger(run_dir, self.config.wandb_project))
            config["logger"] = loggers
        if config.get("enable_checkpointing", True) is not False:
            callbacks = [
                *callbacks,
                RunCheckpoint(run_dir, self.config.checkpoint_every_n_steps),
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
            RunIdentity(self.config.run_name),
            RunStatus(run_dir, self.config.status_interval),
            SkippedImagesReport(),
            LearningRateMonitor(logging_interval="step"),
        ]
        try:
            return super()._instantiate_trainer(config, callbacks)
        except MisconfigurationException as e:
            first = str(e).split(". ")[0].strip().rstrip(".")
            raise ConfigError(
                f"{first} (--trainer.accelerator {config.get('accelerator')}, --trainer.devices "
                f"{config.get('devices')}): use --trainer.accelerator cpu, or auto."
            ) from None

    @property
    def run_config(self) -> RunConfig:
        return next(c for c in self.trainer.callbacks if isinstance(c, RunConfig))

    def check_run(self) -> None:
        """Everything that can be checked before training starts."""
        model, data, trainer = self.model, self.datamodule, self.trainer
        backbone = model.backbone
        if data.transform is not None:
            for size in sorted(set(data.transform.view_sizes)):
                check_input_size(backbone, size)
                model.check_view_size(size)
        data.check(world_size=trainer.world_size)
        if data.device_augment:  # a block with no device translation: one line, on every process
            from selfsup.data.device_views import DeviceViews

            DeviceViews(data.transform)
        if trainer.is_global_zero:
            print(f"selfsup: data {one_line(describe(data.train_dataset, samples=4))}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if data.device_augment:
                load = data.worker_transform().load_size
                print(f"selfsup: views made on the {trainer.strategy.root_device.type} (kornia), per "
                      f"sample, from {load} px squares the workers load", file=sys.stderr, flush=True)  # fmt: skip
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
        if str(self.asked_precision) == "bf16-true" and isinstance(model, TeacherStudentMethod):
            raise ConfigError(
                f"{type(model).__name__}'s EMA teacher needs fp32 weights: with bf16-true an update of "
                "1 - momentum vanishes below bf16's resolution. Use --trainer.precision bf16-mixed."
            )
        if self.config.trainer.sync_batchnorm and isinstance(trainer.accelerator, CPUAccelerator):
            raise ConfigError(
                "trainer.sync_batchnorm needs GPUs (SyncBatchNorm has no CPU kernel): drop it for CPU runs."
            )


def cpu_fp32_flags(config: Any, argv: list[str]) -> tuple[list[str], str | None]:
    """The flags that set a config's ``cpu_fp32`` options when the run (``config``, parsed
    from ``argv``) will train in fp32 on a CPU, less those ``argv`` gives itself; and the
    line that says what they change (None if nothing)."""
    budget = config.get("cpu_fp32")
    trainer = config.trainer
    if not budget or not runs_on_cpu(trainer.accelerator):
        return [], None
    if not is_fp32(cpu_precision(trainer.precision, trainer.accelerator)[0]):
        return [], None
    options = list(config.keys())
    flags, chosen = [], []
    for key, value in budget.items():
        if key not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"cpu_fp32: {key} is not an option of selfsup pretrain.{hint}")
        if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv):
            continue  # the command line wins
        if config[key] != value:
            flags += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
            chosen.append(f"{key} {value} (not {config[key]})")
    if not chosen:
        return [], None
    return flags, (
        "selfsup: training in fp32 on a CPU (a step takes several times as long as in bf16 "
        "on native bf16 or a GPU): the config's cpu_fp32 budget applies, "
        f"{', '.join(chosen)}; --cpu_fp32 null trains the config's own values."
    )


def default_run_name(config_file: Any, class_path: str) -> str:
    """``<method>/<config name>``, e.g. ``simclr/resnet18_cifar``: the run's name, and its
    directory under ``runs/``, unless given."""
    stem = Path(str(config_file)).stem if config_file else "pretrain"
    return f"{class_path.rsplit('.', 1)[-1].lower()}/{stem}"


def build_pretrain_cli(argv: list[str], resolve_only: bool = False) -> PretrainCLI:
    """Parse ``selfsup pretrain`` arguments and instantiate model, data and trainer (no
    training); with ``resolve_only``, parse and pin the seed without instantiating, and
    leave what depends on the machine to the one that runs it."""
    quiet_lightning()
    cls = PretrainCLI
    if resolve_only:

        class cls(PretrainCLI):  # the same CLI, minus instantiation
            runs_here = False

            def instantiate_classes(self) -> None:
                pass

    try:
        return cls(
            SelfSupervisedMethod,
            PretrainDataModule,
            subclass_mode_model=True,
            run=False,
            args=argv,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            parser_kwargs={
                "prog": "selfsup pretrain",
                "exit_on_error": False,
                "allow_abbrev": False,
            },
            trainer_defaults={"log_every_n_steps": 10},
            # Reproducible by default; a resumed run keeps the seed it started with.
            seed_everything_default=0,
        )
    except (ValueError, TypeError) as e:
        # jsonargparse reports a constructor's ConfigError as "Does not validate against
        # any of the Union subtypes": the user's one line is the ConfigError inside.
        cause = _config_error_in(e)
        if cause is None:
            raise
        raise ConfigError(str(cause)) from None


def _config_error_in(error: BaseException | None) -> ConfigError | None:
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, ConfigError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def explain_parse_error(message: str, parser: LightningArgumentParser) -> str:
    """One line for jsonargparse's error: an unknown option with its close matches
    (a method's own options are read from its signature), else the gist of the message."""
    option = re.search(r"Option '([\w.]+)' is not accepted", message)
    cls = re.search(r"Problem with given class_path '([\w.]+)'", message)
    unrecognized = re.search(r"[Uu]nrecognized arguments: (\S+)", message)
    if option and cls:
        name, candidates = option.group(1), _init_parameters(cls.group(1))
        where = (
            f"--model.init_args.{name}: {cls.group(1).rsplit('.', 1)[-1]} has no option {name!r}"
        )
    elif option or unrecognized:
        name = (option or unrecognized).group(1).lstrip("-")
        candidates = [k for k in parser.get_defaults().keys() if k != "config"]  # noqa: SIM118 (dotted keys)
        where = f"--{name}: no such option"
    else:
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        gist = next((ln for ln in lines if ln.startswith("- ") and "NoneType" not in ln), "")
        return (" ".join([*lines[:1], gist.lstrip("- ")]).strip() + ". See selfsup pretrain "
                "--help, or --print_config for every value.")  # fmt: skip
    close = difflib.get_close_matches(name.rsplit(".", 1)[-1], [c.rsplit(".", 1)[-1] for c in candidates], n=3, cutoff=0.6)  # fmt: skip
    full = [c for c in candidates if c.rsplit(".", 1)[-1] in close]
    hint = f" Did you mean {' or '.join('--' + c for c in full or close)}?" if close else ""
    return f"{where}.{hint} (--print_config lists every option.)"


def _init_parameters(class_path: str) -> list[str]:
    """Constructor arguments of a method class and of the bases its ``**kwargs`` reach."""
    try:
        cls = method_class(class_path)
    except ConfigError:
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names += [p for p in inspect.signature(init).parameters if p not in ("self", "kwargs")]
    return list(dict.fromkeys(names))


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
