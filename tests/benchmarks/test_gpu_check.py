"""benchmarks/gpu_check.py spends minutes of a lent GPU: a data file it could not
evaluate is refused in one line with exit 2 before any run starts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

X4 = np.zeros((4, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    ("arrays", "named"),
    [
        ({"x_train": X4, "x_test": X4}, "y_train, y_test"),  # no labels: no kNN, no probe
        ({"x_train": X4, "y_train": np.arange(4), "x_test": X4}, "y_train, y_test"),
        ({"images": X4}, "'x_train'"),  # not selfsup's layout at all
    ],
)
def test_data_it_cannot_evaluate_stops_with_one_line_before_any_run(tmp_path, arrays, named):
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--data", str(tmp_path / "d.npz"),
         "--accelerator", "cpu", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO / "benchmarks", timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: ") and named in lines[0]
    assert not out.exists()  # nothing ran, nothing was written
