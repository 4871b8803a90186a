"""The README's walk through a medical case, run as it stands: a DICOM tree of CT slices
(pydicom's own CT_small.dcm, shifted, rescaled, noised, with a bright disc in the `lesion`
class) and its manifest at the paths the walk names, then every command of the walk's
```bash block, verbatim, in bash, in that folder (with the repository's configs/ linked in).
The probe must end its stdout with a JSON line holding an AUROC, and the attention step must
write its PNGs."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import REPO

#: The comment in README.md right above the walk's code block.
MARKER = "<!-- the walk: tests/integration/test_readme_walk.py"


def walk_commands() -> list[str]:
    """The shell commands of the README's walk block, `\\` continuations joined, comments
    left out."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
    assert lines[start + 1].strip() == "```bash", "the walk's marker is not above a bash block"
    block = lines[start + 2 : start + 2 + lines[start + 2 :].index("```")]
    commands, pending = [], ""
    for line in block:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        command, pending = pending + line, ""
        if command.strip() and not command.lstrip().startswith("#"):
            commands.append(command.strip())
    return commands


def make_scans(root: Path, patients: int = 8, per_patient: int = 4, seed: int = 0) -> Path:
    """``root/scans/P01/IM1.dcm ...`` and ``root/scans.csv`` (path, label, group, split): a
    quarter of the patients are the test split; each patient has both classes."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    slope, intercept = float(base.RescaleSlope), float(base.RescaleIntercept)
    hu = base.pixel_array.astype(np.float64) * slope + intercept
    yy, xx = np.mgrid[: hu.shape[0], : hu.shape[1]]
    rows = []
    for p in range(patients):
        patient = f"P{p + 1:02d}"
        split = "test" if p >= patients * 3 // 4 else "train"
        for k in range(per_patient):
            label = "lesion" if (p + k) % 2 else "normal"
            image = np.roll(hu, tuple(rng.integers(-8, 9, 2)), axis=(0, 1)) * rng.uniform(0.9, 1.1)
            image += rng.normal(0.0, 25.0, image.shape)
            if label == "lesion":
                cy, cx = rng.integers(30, 98, 2)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(10, 18) ** 2] += 350.0
            stored = np.clip(np.round((image - intercept) / slope), -32768, 32767).astype(np.int16)
            ds = base.copy()
            ds.PatientID = ds.PatientName = patient
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window of its own
            ds.PixelData = stored.tobytes()
            path = root / "scans" / patient / f"IM{k + 1}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            rows.append({"path": path.relative_to(root).as_posix(), "label": label,
                         "group": patient, "split": split})  # fmt: skip
    table = root / "scans.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return table


def test_the_readme_describes_the_scans_this_test_makes(tmp_path):
    """The table the README shows is this test's: its header and the rows it quotes."""
    table = make_scans(tmp_path).read_text().splitlines()
    readme = (REPO / "README.md").read_text()
    shown = re.search(r"scans\.csv:\n((?:    .*\n)+)", readme).group(1).split()
    assert shown[0] == table[0] == "path,label,group,split"
    assert {row for row in shown[1:] if row != "..."} <= set(table[1:])
    files = re.search(r"```text\n(scans/.*)\n", readme).group(1).split()
    assert all((tmp_path / f).is_file() for f in files if f != "...")


def test_the_readme_walk_runs_as_written(tmp_path):
    commands = walk_commands()
    assert [c.split()[:2] for c in commands if c.startswith("selfsup")] == [
        ["selfsup", "data"], ["selfsup", "pretrain"], ["selfsup", "probe"], ["selfsup", "attention"],
    ]  # fmt: skip
    make_scans(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    # `selfsup` and `python` are the environment's running this test.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")])}  # fmt: skip
    outputs, seconds = {}, {}
    for command in commands:
        start = time.monotonic()
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        seconds[command.split()[1] if command.startswith("selfsup") else "png"] = round(
            time.monotonic() - start
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        outputs[command] = proc.stdout
    print("seconds per step:", seconds)

    assert (tmp_path / "scans-preview.png").is_file()
    assert (tmp_path / "runs/scans-dino/checkpoints/last.ckpt").is_file()
    probe = next(out for c, out in outputs.items() if c.startswith("selfsup probe"))
    result = json.loads(probe.strip().splitlines()[-1])
    assert result["task"] == "probe" and 0.0 <= result["auroc"] <= 1.0
    assert result["headline"]["metric"] == "top1" and result["classes"] == ["lesion", "normal"]
    assert result["n_test"] == 8 and set(result["n_groups"]) == {"train", "val", "test"}
    assert (tmp_path / "runs/scans-dino/eval/probe-scans/metrics.json").is_file()
    pictures = sorted(p.name for p in (tmp_path / "attention" / "IM2").glob("*.png"))
    assert pictures == ["head-0.png", "head-1.png", "head-2.png", "image.png", "mask.png",
                        "mean.png"]  # fmt: skip
    assert (tmp_path / "attention" / "overview.png").stat().st_size > 0
