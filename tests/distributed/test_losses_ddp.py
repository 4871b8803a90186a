"""Batch losses with two real gloo processes equal one process holding both batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port

SCRIPTS = Path(__file__).parent / "scripts"


def run_script(name: str, out: Path, *args: str, timeout: int = 180) -> dict:
    env = {**os.environ, "SELFSUP_TEST_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("loss", ["ntxent", "triplet_batch_hard", "triplet_semi_hard"])
def test_two_processes_equal_one_process_with_the_whole_batch(loss, tmp_path):
    r = run_script("loss_two_procs.py", tmp_path / "out.json", loss)
    assert r["loss_two"] == pytest.approx(r["loss_one"], abs=1e-5)
    assert r["grad_max_abs_diff"] <= 1e-5 * max(1.0, r["grad_max_abs"])
    # Negatives really come from the other process: rank 0's loss is not its local-only loss.
    assert r["rank0_loss"] != pytest.approx(r["ungathered_rank0_loss"], abs=1e-4)


@pytest.mark.parametrize("method", ["byol", "dino", "dinov2", "dinov2_sk", "mae", "ijepa"])
def test_two_processes_equal_one_process_for_whole_methods(method, tmp_path):
    r = run_script("method_two_procs.py", tmp_path / "out.json", method, timeout=300)
    assert r["loss_two"] == pytest.approx(r["loss_one"], rel=1e-5)
    assert r["grad_max_abs_diff"] <= 1e-5 * max(1.0, r["grad_max_abs"])
    assert abs(r["rank0_loss"] - r["loss_one"]) > 1e-5  # the halves differ: not a trivial check
    if method in ("dino", "dinov2"):
        # The centres (DINOv2: class tokens and masked patches) move by the mean over
        # *both* processes' teacher outputs.
        assert r["centre_moved"] > 1e-4
        assert r["centre_diff"] <= 1e-6
    if method == "dinov2_sk":  # Sinkhorn-Knopp's sums run over both processes; no centre moves
        assert r["centre_moved"] == 0.0
    if method.startswith("dinov2"):  # unequal numbers of masked patches per process
        assert r["masked_per_process"][0] != r["masked_per_process"][1]
