"""The preview grid ``selfsup data inspect`` writes: the path it reports is the file."""

from __future__ import annotations

import numpy as np
import pytest

from selfsup.data.readers.arrays import ArrayDataset
from selfsup.viz.preview import write_preview


@pytest.fixture
def images() -> ArrayDataset:
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.integers(0, 256, (6, 8, 8, 3), np.uint8), np.arange(6) % 2,
                        ["a", "b"], source="test")  # fmt: skip


@pytest.mark.parametrize(
    "name,written",
    [("NAME", "NAME.png"), ("run.v2", "run.v2.png"), ("grid.png", "grid.png"),
     ("grid.pdf", "grid.pdf")],
)  # fmt: skip
def test_the_path_reported_is_the_file_written(tmp_path, images, name, written):
    # matplotlib adds .png to a bare name by itself; the report must name that file.
    result = write_preview(images, tmp_path / "out" / name, n=4)
    assert result["preview"] == str(tmp_path / "out" / written)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [written]
    assert len(result["shown"]) == 4
