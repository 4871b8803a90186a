"""What the benchmark scripts share: the machine's description and RESULTS.md sections."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
#: RESULTS.md, the records (``*_runs.json``) and the figures of every study
RESULTS_DIR = REPO / "benchmarks/results"
RESULTS = RESULTS_DIR / "RESULTS.md"
CIFAR = REPO.parent / "shared/data/cifar10_jpeg.npz"
PNEUMONIA = REPO.parent / "shared/data/pneumoniamnist.npz"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: date, CPU with the instruction set torch's kernels use (AVX2 and AVX512
    CPUs of one model name train at different speeds and, for bf16, precisions), cores,
    memory, versions."""
    import lightly
    import pytorch_lightning
    import timm

    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = "?"
    return (
        f"{time.strftime('%Y-%m-%d')}, {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{os.cpu_count()} cores, {memory}, no GPU; "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"lightning {pytorch_lightning.__version__}, timm {timm.__version__}, "
        f"lightly {lightly.__version__}"
    )


def committed_text(rel: str, rev: str, script: str) -> str:
    """The file ``rel`` as committed at git revision ``rev``; where git has no such file
    there, one line naming the problem and exit status 2."""
    proc = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{rel}"],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        print(f"{script}: --before {rev}: git has no {rel} at that revision; give a commit "
              "where it exists (e.g. 6ad51ce^)", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    return proc.stdout


def spread_percent(values: list[float]) -> float:
    """(max - min) / median, in percent."""
    return (max(values) - min(values)) / statistics.median(values) * 100


def write_section(heading: str, body: str, out: Path | None = None) -> None:
    """Replace the section ``## heading`` of ``out`` (RESULTS.md by default; or append it)."""
    out = out or RESULTS
    section = f"## {heading}\n\n{body.strip()}\n"
    text = out.read_text() if out.is_file() else "# Benchmarks\n"
    start = text.find(f"## {heading}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    out.write_text(text)


def run_selfsup(*args: str) -> tuple[dict | None, str]:
    """Run a selfsup command in a subprocess -> its JSON line (evaluators; None for the
    others) and its stdout + stderr; a failure ends the benchmark with its stderr."""
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return (json.loads(last) if last.startswith("{") else None), proc.stdout + proc.stderr


def selfsup_json(*args: str) -> dict | None:
    """:func:`run_selfsup`'s JSON line only."""
    return run_selfsup(*args)[0]


def random_init_checkpoint(trained: Path, out: Path) -> Path:
    """``trained`` with its weights replaced by the same model built afresh (seed 0)."""
    import yaml

    from selfsup.methods import method_class

    ckpt = torch.load(trained, map_location="cpu", weights_only=False)
    config = yaml.safe_load((trained.parent.parent / "config.yaml").read_text())["model"]
    torch.manual_seed(0)
    cls = method_class(config["class_path"].rsplit(".", 1)[-1])
    model = cls(**config.get("init_args", {}))
    fresh = model.state_dict()
    assert fresh.keys() == ckpt["state_dict"].keys()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": fresh, "selfsup": {**ckpt["selfsup"], "random_init": True}}, out)
    return out
