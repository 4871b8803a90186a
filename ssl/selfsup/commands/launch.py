"""``selfsup launch``: SLURM jobs from the sbatch templates shipped in the package.

    selfsup launch pretrain --nodes N --gpus_per_node G --cpus_per_task C --time T
                            [--partition P] [--account A] [--qos Q] [--run_dir RUN]
                            [--accelerator cpu --tasks_per_node K] [--dry_run true]
                            -- --config FILE [pretrain options]
    selfsup launch probe    --ckpt [CKPT,...] --data.path DATA [--out SWEEP] ... [-- probe options]

Options follow every command's grammar (selfsup.commands.options); ``launch probe``
writes its ``--data.*`` options to ``SWEEP/data.yaml``, which each task reads as
``--data SWEEP/data.yaml``.

(``selfsup summary SWEEP`` tabulates a probe sweep's results: selfsup.commands.evaluate.)

``launch pretrain`` resolves the config at submission (every value, the seed pinned,
the trainer's nodes and devices matching the job) into ``RUN/config.yaml``, renders
``RUN/pretrain.sbatch`` and submits it; the job runs that config with
``--resume auto``, so a requeued or resubmitted job continues the run. Lightning
handles the pre-emption signal (checkpoint, then ``scontrol requeue``).

The templates are package data, ``selfsup/commands/templates/{pretrain,probe_array}.sbatch``,
read with :mod:`importlib.resources`, so an installed wheel carries them; the
repository's top-level ``launch/`` holds byte-identical copies for reading and
copying (a test keeps them equal). ``--template FILE`` renders your own copy instead.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from selfsup.commands.options import check_yaml, config_files, run_with_options
from selfsup.data.module import PretrainDataModule
from selfsup.errors import ConfigError
from selfsup.run_directory import RunDir

if TYPE_CHECKING:
    from importlib.abc import Traversable


def packaged_template(name: str) -> Traversable:
    """The job template ``name`` (e.g. ``pretrain.sbatch``) shipped in
    ``selfsup/commands/templates/``."""
    return resources.files("selfsup.commands") / "templates" / name


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[options] -- [passed on]``."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def time_seconds(time: str) -> int | None:
    """SLURM's time formats (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``)
    in seconds; None for no limit (``0``, ``UNLIMITED``, ``INFINITE``) or a format it
    does not parse."""
    if time.strip().upper() in ("0", "UNLIMITED", "INFINITE"):
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", time.strip())
    if not m:
        return None
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-H[:M[:S]]
        return days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:
        return a * 3600 + b * 60 + c
    if b is not None:
        return a * 60 + b
    return a * 60


def render(template: Path | Traversable, values: dict[str, Any]) -> str:
    """Fill ``{{name}}`` fields; every field must be given, every value used."""
    if not template.is_file():
        raise ConfigError(
            f"Job template {template} not found: pass --template FILE (see launch/ in the "
            "selfsup repository)."
        )
    text = template.read_text(encoding="utf-8")
    missing = sorted(set(re.findall(r"{{(\w+)}}", text)) - set(values))
    if missing:
        raise ConfigError(f"{template} has fields no option fills: {', '.join(missing)}.")
    return re.sub(r"{{(\w+)}}", lambda m: str(values[m.group(1)]), text)


def _plain_path(path: Path, what: str) -> str:
    text = str(path)
    if re.search(r"\s", text):
        raise ConfigError(
            f"{what} {text!r} contains whitespace, which #SBATCH lines cannot hold: choose a path without."
        )
    return text


@dataclass(frozen=True, kw_only=True)
class SlurmJob:
    """The job's shape and SLURM's options.

    Args:
        nodes: nodes (pretrain: Lightning DDP across them; probe: 1)
        gpus_per_node: GPUs per node, one task each
        cpus_per_task: CPU cores per task (data loading; srun is given them)
        time: SLURM time limit, e.g. 1-00:00:00 or 4:00:00
        partition: SLURM partition
        account: SLURM account
        qos: SLURM quality of service
        mem: memory per node, e.g. 64G
        accelerator: gpu, or cpu: tasks_per_node CPU processes (gloo) instead of GPUs
        tasks_per_node: with accelerator cpu
        template: your own job template (default: the packaged one; launch/ in the
            repository has copies)
        python: the job's Python
        dry_run: print the job script instead of submitting it
    """

    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    time: str = "1-00:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None
    accelerator: Literal["gpu", "cpu"] = "gpu"
    tasks_per_node: int | None = None
    template: str | None = None
    python: str = sys.executable
    dry_run: bool = False


def _job_shape(job: SlurmJob) -> tuple[int, list[str]]:
    """Tasks per node and the optional #SBATCH lines."""
    if job.accelerator == "cpu":
        tasks = job.tasks_per_node or 1
        lines = []
    else:
        if job.tasks_per_node not in (None, job.gpus_per_node):
            raise ConfigError(
                "--tasks_per_node is for --accelerator cpu; on GPUs there is one task per GPU "
                "(--gpus_per_node)."
            )
        tasks = job.gpus_per_node
        lines = [f"#SBATCH --gpus-per-node={job.gpus_per_node}"]
    for name, value in (("nodes", job.nodes), ("cpus_per_task", job.cpus_per_task)):
        if value < 1:
            raise ConfigError(f"--{name} {value}: give 1 or more.")
    if tasks < 1:
        raise ConfigError(f"{tasks} tasks per node: give 1 or more GPUs or CPU tasks.")
    if time_seconds(job.time) is None and job.time.strip().upper() not in (
        "0",
        "UNLIMITED",
        "INFINITE",
    ):
        raise ConfigError(
            f"--time {job.time!r}: use SLURM's format, e.g. 30, 4:00:00 or 2-00:00:00."
        )
    for option in ("partition", "account", "qos", "mem"):
        if getattr(job, option):
            lines.append(f"#SBATCH --{option}={getattr(job, option)}")
    return tasks, lines


def submit(script: Path) -> str:
    """``sbatch`` the script; the job id."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "sbatch not found: run selfsup launch on a SLURM login node, or use --dry_run true."
        )
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"sbatch refused {script}: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


# --------------------------------------------------------------------------- pretrain
def launch_pretrain(
    job: SlurmJob,
    run_dir: str | None = None,
    signal_seconds: int = 300,
    overrides: tuple[str, ...] = (),
) -> int:
    """Submit a pretraining run as a SLURM job (Lightning DDP, one task per GPU) that
    checkpoints, requeues and resumes by itself. What follows -- is selfsup pretrain's
    own command line: -- --config configs/<method>/<name>.yaml [--data.path DATA ...].

    Args:
        run_dir: the run directory (default: runs/<method>/<config name>)
        signal_seconds: USR1 this many seconds before the time limit: time to write a
            checkpoint
    """
    configs = config_files(list(overrides))
    if not configs:
        raise ConfigError("launch pretrain: give the pretraining config after --: "
                          "selfsup launch pretrain --nodes N ... -- --config CONFIG.yaml")  # fmt: skip
    config = configs[0]
    tasks, sbatch_lines = _job_shape(job)
    limit = time_seconds(job.time)
    if limit is not None and signal_seconds >= limit:
        raise ConfigError(
            f"--signal_seconds {signal_seconds} is not shorter than --time {job.time}: "
            "the job would be signalled before it starts training."
        )
    run_path = Path(run_dir or Path("runs") / _run_name(config)).resolve()
    _plain_path(run_path, "--run_dir")
    run = RunDir(run_path)
    if run.holds_run():
        raise ConfigError(
            f"{run_path} already holds a run: continue it with `sbatch {run.job_script}` "
            "(it resumes), or choose another --run_dir."
        )
    accelerator = "cpu" if job.accelerator == "cpu" else "gpu"
    strategy = "ddp" if job.nodes * tasks > 1 else "auto"
    trainer = ["--trainer.default_root_dir", str(run_path), "--trainer.num_nodes", str(job.nodes),
               "--trainer.devices", str(tasks), "--trainer.accelerator", accelerator,
               "--trainer.strategy", strategy]  # fmt: skip
    from selfsup.commands.pretrain import resolve_pretrain_config

    resolved, batch = resolve_pretrain_config([*overrides, *trainer])
    values = {
        "job_name": f"selfsup-{Path(config).stem}",
        "nodes": job.nodes,
        "tasks_per_node": tasks,
        "cpus_per_task": job.cpus_per_task,
        "time": job.time,
        "signal_seconds": signal_seconds,
        "run_dir": run_path,
        "sbatch_options": "\n".join(sbatch_lines),
        "python": shlex.quote(job.python),
        "accelerator": accelerator,
        "strategy": strategy,
    }
    template = Path(job.template) if job.template else packaged_template("pretrain.sbatch")
    script = render(template, values)
    global_batch = batch * job.nodes * tasks
    header = (
        f"# global batch {global_batch} = data.batch_size {batch} x {job.nodes} node(s) x "
        f"{tasks} task(s); learning rates scale with it (base_lr x {global_batch} / 256)"
    )
    if job.dry_run:
        print(header)
        print(script, end="")
        return 0
    run_path.mkdir(parents=True, exist_ok=True)  # SLURM writes its logs here from the start
    run.config.write_text(resolved)
    path = run.job_script
    path.write_text(script)
    job_id = submit(path)
    print(header, file=sys.stderr)
    print(json.dumps({"task": "launch", "job_id": job_id, "run_dir": str(run_path),
                      "script": str(path)}))  # fmt: skip
    return 0


# --------------------------------------------------------------------------- probe sweeps
def launch_probe(
    job: SlurmJob,
    ckpt: str | list[str],
    data: PretrainDataModule,
    out: str | None = None,
    overrides: tuple[str, ...] = (),
) -> int:
    """Submit one SLURM array job that linear-probes each checkpoint (a task each).
    Options after -- are selfsup probe's.

    Args:
        ckpt: a checkpoint, run directory or glob ('runs/*/checkpoints/last.ckpt'), or a list
            of them: [runs/a,runs/b]
        out: sweep directory (default runs/probe-sweep)
    """
    if data.path is None:
        raise ConfigError("--data.path is not set: give the labelled data every task probes on.")
    tasks, sbatch_lines = _job_shape(job)
    if job.nodes != 1:
        raise ConfigError("--nodes: each probe task runs on one node; leave --nodes at 1.")

    from selfsup.checkpoints import resolve_checkpoint

    ckpts: list[Path] = []
    for pattern in [ckpt] if isinstance(ckpt, str) else ckpt:
        matches = sorted(glob.glob(pattern)) or [pattern]
        ckpts.extend(resolve_checkpoint(m).resolve() for m in matches)
    sweep = Path(out or "runs/probe-sweep").resolve()
    _plain_path(sweep, "--out")
    for ckpt in ckpts:
        _plain_path(ckpt, "checkpoint")
    values = {
        "job_name": "selfsup-probe",
        "last_task": len(ckpts) - 1,
        "tasks_per_node": tasks,
        "cpus_per_task": job.cpus_per_task,
        "time": job.time,
        "sweep_dir": sweep,
        "sbatch_options": "\n".join(sbatch_lines),
        "python": shlex.quote(job.python),
        "data": shlex.quote(str(sweep / "data.yaml")),
        "accelerator": "cpu" if job.accelerator == "cpu" else "gpu",
        "num_workers": max(0, job.cpus_per_task - 1),
        "probe_args": " ".join(shlex.quote(a) for a in overrides),
    }
    template = Path(job.template) if job.template else packaged_template("probe_array.sbatch")
    script = render(template, values)
    if job.dry_run:
        print("\n".join(f"# task {i}: {c}" for i, c in enumerate(ckpts)))
        print(script, end="")
        return 0
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "data.yaml").write_text(yaml.safe_dump(data.options, sort_keys=False))
    (sweep / "checkpoints.txt").write_text("".join(f"{c}\n" for c in ckpts))
    path = sweep / "probe_array.sbatch"
    path.write_text(script)
    job_id = submit(path)
    print(json.dumps({"task": "launch", "job_id": job_id, "sweep_dir": str(sweep),
                      "n_tasks": len(ckpts), "script": str(path)}))  # fmt: skip
    return 0


def _run_name(config: str) -> str:
    """The default run name of ``selfsup pretrain --config CONFIG``."""
    from selfsup.train.run import default_run_name

    model = check_yaml(config).get("model")
    class_path = model.get("class_path", "") if isinstance(model, dict) else str(model or "")
    return default_run_name(config, class_path or "pretrain")


USAGE = """usage: selfsup launch pretrain --nodes N --gpus_per_node G ... -- --config FILE [pretrain options]
       selfsup launch probe --ckpt [CKPT,...] --data.path DATA ... [-- probe options]

pretrain: one pretraining run as a SLURM job that checkpoints, requeues and resumes itself.
probe:    one array job of linear probes, a task per checkpoint (selfsup summary SWEEP
          tabulates them).
Run 'selfsup launch pretrain --help' or 'selfsup launch probe --help' for the options.
"""


def launch(argv: list[str]) -> int:
    kinds = {"pretrain": launch_pretrain, "probe": launch_probe}
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if not argv or argv[0] not in kinds:
        raise ConfigError(
            "selfsup launch pretrain|probe ...: say which kind of job (see --help of each)."
        )
    options, overrides = split_overrides(argv[1:])
    for path in config_files(options):
        if {"model", "trainer"} & set(check_yaml(path)):
            raise ConfigError(
                f"--config {path} is a pretraining config: launch's --config is a YAML of its "
                f"own options; the pretraining command goes after --: selfsup launch "
                f"{argv[0]} --nodes N ... -- --config {path}"
            )
    defaults = {"time": "4:00:00", "cpus_per_task": 4} if argv[0] == "probe" else None
    return run_with_options(f"selfsup launch {argv[0]}", kinds[argv[0]], options, defaults,
                            overrides=tuple(overrides))  # fmt: skip
