"""``selfsup launch``: SLURM jobs from the sbatch templates shipped in the package.

    selfsup launch pretrain --config FILE --nodes N --gpus-per-node G --cpus-per-task C --time T
                            [--partition P] [--account A] [--qos Q] [--run-dir RUN]
                            [--accelerator cpu --tasks-per-node K] [--dry-run] [-- overrides]
    selfsup launch probe    --ckpt CKPT [CKPT ...] --data DATA [--out SWEEP] ... [-- probe options]

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

import argparse
import glob
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsup.errors import ConfigError

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


def _add_job_options(parser: argparse.ArgumentParser, default_time: str) -> None:
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1, help="one task per GPU")
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--time", default=default_time, help="SLURM time limit, e.g. 1-00:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--qos", default=None)
    parser.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    parser.add_argument(
        "--accelerator",
        choices=["gpu", "cpu"],
        default="gpu",
        help="cpu: --tasks-per-node CPU processes (gloo) instead of GPUs",
    )
    parser.add_argument("--tasks-per-node", type=int, default=None, help="with --accelerator cpu")
    parser.add_argument(
        "--template",
        default=None,
        help="your own job template (default: the packaged one; launch/ in the repository has copies)",
    )
    parser.add_argument("--python", default=sys.executable, help="the job's Python")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the job script instead of submitting it"
    )


def _job_shape(args: argparse.Namespace) -> tuple[int, list[str]]:
    """Tasks per node and the optional #SBATCH lines."""
    if args.accelerator == "cpu":
        tasks = args.tasks_per_node or 1
        lines = []
    else:
        if args.tasks_per_node not in (None, args.gpus_per_node):
            raise ConfigError(
                "--tasks-per-node is for --accelerator cpu; on GPUs there is one task per GPU "
                "(--gpus-per-node)."
            )
        tasks = args.gpus_per_node
        lines = [f"#SBATCH --gpus-per-node={args.gpus_per_node}"]
    for name, value in (("nodes", args.nodes), ("cpus-per-task", args.cpus_per_task)):
        if value < 1:
            raise ConfigError(f"--{name} {value}: give 1 or more.")
    if tasks < 1:
        raise ConfigError(f"{tasks} tasks per node: give 1 or more GPUs or CPU tasks.")
    if time_seconds(args.time) is None and args.time.strip().upper() not in (
        "0",
        "UNLIMITED",
        "INFINITE",
    ):
        raise ConfigError(
            f"--time {args.time!r}: use SLURM's format, e.g. 30, 4:00:00 or 2-00:00:00."
        )
    for option in ("partition", "account", "qos", "mem"):
        if getattr(args, option):
            lines.append(f"#SBATCH --{option}={getattr(args, option)}")
    return tasks, lines


def submit(script: Path) -> str:
    """``sbatch`` the script; the job id."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "sbatch not found: run selfsup launch on a SLURM login node, or use --dry-run."
        )
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"sbatch refused {script}: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


# --------------------------------------------------------------------------- pretrain
def launch_pretrain(argv: list[str]) -> int:
    options, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="selfsup launch pretrain",
        description="Submit a pretraining run as a SLURM job (Lightning DDP, one task per GPU) "
        "that checkpoints, requeues and resumes by itself.",
    )
    parser.add_argument("--config", required=True, help="configs/<method>/<name>.yaml")
    parser.add_argument("--run-dir", default=None, help="default: runs/<method>/<config name>")
    parser.add_argument(
        "--signal-seconds",
        type=int,
        default=300,
        help="USR1 this many seconds before the time limit: time to write a checkpoint",
    )
    _add_job_options(parser, default_time="1-00:00:00")
    args = parser.parse_args(options)
    tasks, sbatch_lines = _job_shape(args)
    limit = time_seconds(args.time)
    if limit is not None and args.signal_seconds >= limit:
        raise ConfigError(
            f"--signal-seconds {args.signal_seconds} is not shorter than --time {args.time}: "
            "the job would be signalled before it starts training."
        )
    run_dir = Path(args.run_dir or Path("runs") / _run_name(args.config)).resolve()
    _plain_path(run_dir, "--run-dir")
    if any(run_dir.glob("checkpoints/*.ckpt")) or any(run_dir.glob("hpc_ckpt_*.ckpt")):
        raise ConfigError(
            f"{run_dir} already holds a run: continue it with `sbatch {run_dir}/pretrain.sbatch` "
            "(it resumes), or choose another --run-dir."
        )
    accelerator = "cpu" if args.accelerator == "cpu" else "gpu"
    strategy = "ddp" if args.nodes * tasks > 1 else "auto"
    trainer = ["--trainer.default_root_dir", str(run_dir), "--trainer.num_nodes", str(args.nodes),
               "--trainer.devices", str(tasks), "--trainer.accelerator", accelerator,
               "--trainer.strategy", strategy]  # fmt: skip
    from selfsup.commands.pretrain import resolve_pretrain_config

    config, batch = resolve_pretrain_config(["--config", args.config, *overrides, *trainer])
    values = {
        "job_name": f"selfsup-{Path(args.config).stem}",
        "nodes": args.nodes,
        "tasks_per_node": tasks,
        "cpus_per_task": args.cpus_per_task,
        "time": args.time,
        "signal_seconds": args.signal_seconds,
        "run_dir": run_dir,
        "sbatch_options": "\n".join(sbatch_lines),
        "python": shlex.quote(args.python),
        "accelerator": accelerator,
        "strategy": strategy,
    }
    template = Path(args.template) if args.template else packaged_template("pretrain.sbatch")
    script = render(template, values)
    global_batch = batch * args.nodes * tasks
    header = (
        f"# global batch {global_batch} = data.batch_size {batch} x {args.nodes} node(s) x "
        f"{tasks} task(s); learning rates scale with it (base_lr x {global_batch} / 256)"
    )
    if args.dry_run:
        print(header)
        print(script, end="")
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)  # SLURM writes its logs here from the start
    (run_dir / "config.yaml").write_text(config)
    path = run_dir / "pretrain.sbatch"
    path.write_text(script)
    job_id = submit(path)
    print(header, file=sys.stderr)
    print(json.dumps({"task": "launch", "job_id": job_id, "run_dir": str(run_dir),
                      "script": str(path)}))  # fmt: skip
    return 0


# --------------------------------------------------------------------------- probe sweeps
def launch_probe(argv: list[str]) -> int:
    options, probe_args = split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="selfsup launch probe",
        description="Submit one SLURM array job that linear-probes each checkpoint (a task each).",
    )
    parser.add_argument(
        "--ckpt", required=True, nargs="+", help="checkpoints, run directories or globs"
    )
    parser.add_argument("--data", required=True, help="as for selfsup probe")
    parser.add_argument("--out", default=None, help="sweep directory (default runs/probe-sweep)")
    _add_job_options(parser, default_time="4:00:00")
    parser.set_defaults(cpus_per_task=4)
    args = parser.parse_args(options)
    tasks, sbatch_lines = _job_shape(args)
    if args.nodes != 1:
        raise ConfigError("--nodes: each probe task runs on one node; leave --nodes at 1.")

    from selfsup.checkpoints import resolve_checkpoint

    ckpts: list[Path] = []
    for pattern in args.ckpt:
        matches = sorted(glob.glob(pattern)) or [pattern]
        ckpts.extend(resolve_checkpoint(m).resolve() for m in matches)
    sweep = Path(args.out or "runs/probe-sweep").resolve()
    _plain_path(sweep, "--out")
    for ckpt in ckpts:
        _plain_path(ckpt, "checkpoint")
    values = {
        "job_name": "selfsup-probe",
        "last_task": len(ckpts) - 1,
        "tasks_per_node": tasks,
        "cpus_per_task": args.cpus_per_task,
        "time": args.time,
        "sweep_dir": sweep,
        "sbatch_options": "\n".join(sbatch_lines),
        "python": shlex.quote(args.python),
        "data": shlex.quote(args.data),
        "accelerator": "cpu" if args.accelerator == "cpu" else "gpu",
        "num_workers": max(0, args.cpus_per_task - 1),
        "probe_args": " ".join(shlex.quote(a) for a in probe_args),
    }
    template = Path(args.template) if args.template else packaged_template("probe_array.sbatch")
    script = render(template, values)
    if args.dry_run:
        print("\n".join(f"# task {i}: {c}" for i, c in enumerate(ckpts)))
        print(script, end="")
        return 0
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "checkpoints.txt").write_text("".join(f"{c}\n" for c in ckpts))
    path = sweep / "probe_array.sbatch"
    path.write_text(script)
    job_id = submit(path)
    print(json.dumps({"task": "launch", "job_id": job_id, "sweep_dir": str(sweep),
                      "n_tasks": len(ckpts), "script": str(path)}))  # fmt: skip
    return 0


def _run_name(config: str) -> str:
    """The default run name of ``selfsup pretrain --config CONFIG``."""
    from selfsup.commands.options import check_yaml
    from selfsup.train.run import default_run_name

    model = check_yaml(config).get("model")
    class_path = model.get("class_path", "") if isinstance(model, dict) else str(model or "")
    return default_run_name(config, class_path or "pretrain")


USAGE = """usage: selfsup launch pretrain --config FILE --nodes N --gpus-per-node G ... [-- overrides]
       selfsup launch probe --ckpt CKPT [CKPT ...] --data DATA ... [-- probe options]

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
    return kinds[argv[0]](argv[1:])
