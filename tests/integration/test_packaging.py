"""A non-editable install works outside the repository: a wheel of selfsup, installed into
a fresh venv, runs ``selfsup --help`` and renders a SLURM job from its packaged templates.

Cheap on purpose: only selfsup itself is built and installed (no dependencies, nothing
downloaded). The dependencies come from the test's own environment through a ``.pth``
line that adds its site-packages as a plain path: the ``.pth`` files *inside* that
directory are then not processed, so its editable selfsup (a ``.pth`` pointing at
``ssl/``) stays invisible and the fresh venv can only import the installed copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import REPO

TEMPLATES = ("pretrain.sbatch", "probe_array.sbatch")


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                          **kwargs)  # fmt: skip
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the source tree (building in place would write build/ and
    egg-info into the checkout)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "ssl", src / "ssl",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))  # fmt: skip
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    out = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--no-cache-dir", "-w", out, src)  # fmt: skip
    (wheel,) = out.glob("selfsup-*.whl")
    return wheel


def test_wheel_in_a_fresh_venv_runs_and_renders_packaged_templates(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for name in TEMPLATES:
        assert f"selfsup/commands/templates/{name}" in names, (
            f"{wheel.name} lacks the job template {name}: declare it in pyproject.toml's "
            "[tool.setuptools.package-data]"
        )

    fresh = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", fresh)
    python = fresh / "bin" / "python"
    # This environment's pip installs into the fresh venv (which has none of its own).
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", "--no-cache-dir", wheel)  # fmt: skip
    # Only now the dependencies: before the install pip would see the editable selfsup.
    fresh_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                      .stdout.strip())  # fmt: skip
    (fresh_site / "zz-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(fresh / "bin"), env.get("PATH", "")])
    code = "import sys, selfsup; print(selfsup.__file__); print(*sys.path, sep='\\n')"
    where = run(python, "-c", code, cwd=elsewhere, env=env).stdout.splitlines()
    installed = Path(where[0]).resolve()
    assert installed.is_relative_to(fresh.resolve()), installed
    assert not installed.is_relative_to(REPO), f"the editable selfsup leaked in: {installed}"
    leaked = [p for p in where[1:] if p and Path(p).resolve().is_relative_to(REPO / "ssl")]
    assert not leaked, f"the editable install's path is on sys.path: {leaked}"

    selfsup = fresh / "bin" / "selfsup"
    assert "launch" in run(selfsup, "--help", cwd=elsewhere, env=env).stdout
    config = REPO / "configs" / "simclr" / "resnet18_cifar.yaml"
    proc = run(selfsup, "launch", "pretrain", "--nodes", "2", "--gpus_per_node", "4",
               "--time", "01:00:00", "--dry_run", "true", "--", "--config", config, cwd=elsewhere,
               env=env)  # fmt: skip
    script = proc.stdout.splitlines()
    for line in ("#!/bin/bash", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=01:00:00", "#SBATCH --requeue"):  # fmt: skip
        assert line in script, proc.stdout
    assert f"srun {python} -m selfsup.cli pretrain" in proc.stdout  # the job runs this install
    assert (
        f"--trainer.default_root_dir {elsewhere.resolve()}/runs/simclr/resnet18_cifar"
        in proc.stdout
    )
    assert "{{" not in proc.stdout.split("#SBATCH")[-1]  # every field filled
    assert not (elsewhere / "runs").exists()  # a dry run writes nothing
