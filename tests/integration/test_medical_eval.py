"""Evaluation the way medical studies report it, end to end through `selfsup`: multi-label
findings (npz and manifest), patients never split across sets, label-efficiency curves."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_blob_images
from selfsup.cli import main
from selfsup.methods import SimCLR

#: Findings of the four blob classes (bits of the square's colour): red, green, "bright".
FINDINGS = ["red", "green", "both"]


def findings_of(classes: np.ndarray) -> np.ndarray:
    return np.stack([classes & 1, (classes >> 1) & 1, (classes == 3)], 1).astype(np.uint8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    path = tmp_path_factory.mktemp("ckpt") / "simclr.ckpt"
    torch.save({"state_dict": model.state_dict(),
                "selfsup": {**model.checkpoint_metadata(), "image_size": 32}}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def multilabel_npz(tmp_path_factory) -> Path:
    """96 train / 48 test blob images with three overlapping findings and 24 patients."""
    path = tmp_path_factory.mktemp("data") / "findings.npz"
    x_train, c_train = make_blob_images(96, 32, seed=0)
    x_test, c_test = make_blob_images(48, 32, seed=1)
    np.savez(path, x_train=x_train, y_train=findings_of(c_train), x_test=x_test,
             y_test=findings_of(c_test), classes=np.array(FINDINGS),
             groups_train=np.array([f"p{i // 4}" for i in range(96)]))  # fmt: skip
    return path


def run(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main([*args, "--data.num_workers", "0", "--data.batch_size", "32"])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("{")]
    return code, json.loads(lines[-1]) if lines else None, captured.err


def test_probe_and_knn_report_every_finding(ckpt, multilabel_npz, tmp_path, capsys):
    code, knn, _ = run(capsys, "knn", "--ckpt", str(ckpt), "--data.path", str(multilabel_npz),
                       "--out", str(tmp_path / "knn"), "--k", "[5,20]")  # fmt: skip
    assert code == 0 and knn["headline"]["metric"] == "macro_auroc"
    assert set(knn["auroc"]) == set(knn["average_precision"]) == set(FINDINGS)
    assert knn["macro_auroc"] == pytest.approx(np.mean(list(knn["auroc"].values())))
    assert "macro_auroc_k20" in knn and "top1" not in knn
    assert set(knn["prevalence"]) == {"train", "test"}
    code, probe, _ = run(capsys, "probe", "--ckpt", str(ckpt), "--data.path", str(multilabel_npz),
                         "--out", str(tmp_path / "probe"), "--epochs", "20")  # fmt: skip
    assert code == 0 and probe["headline"] == {"metric": "macro_auroc",
                                               "value": probe["macro_auroc"]}  # fmt: skip
    assert set(probe["auroc"]) == set(FINDINGS) and probe["macro_auroc"] > 0.9
    assert probe["mAP"] is not None and probe["micro_auroc"] is not None
    # 24 patients of four images each: the validation split takes whole patients.
    assert probe["n_groups"]["train"] + probe["n_groups"]["val"] == 24
    assert probe["n_val"] % 4 == 0
    saved = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert (
        saved["auroc"] == probe["auroc"]
        and not (tmp_path / "probe" / "confusion_matrix.png").exists()
    )


def write_manifest(root: Path, patients_of_test: list[str]) -> Path:
    """12 train patients (3 images each) and the given test patients (2 each), findings in
    a `labels` column; 16 px coloured squares, so the images are trivially told apart."""
    rows = []
    rng = np.random.default_rng(0)
    colours = {"red": (230, 30, 30), "green": (30, 230, 30)}
    for split, patients, per in (("train", [f"p{i}" for i in range(12)], 3),
                                 ("test", patients_of_test, 2)):  # fmt: skip
        for p in patients:
            for j in range(per):
                found = [n for n in colours if rng.random() < 0.5] or ["none"]
                pixels = np.full((16, 16, 3), 40, np.uint8)
                for n in found:
                    if n != "none":
                        pixels[:, :, list(colours).index(n)] = 230
                name = f"{split}_{p}_{j}.png"
                Image.fromarray(pixels).save(root / name)
                rows.append({"path": name, "labels": "|".join(found), "group": p, "split": split})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "labels", "group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_patients_on_both_sides_are_refused_and_confined_ones_evaluated(ckpt, tmp_path, capsys):
    (tmp_path / "spread").mkdir()
    spread = write_manifest(tmp_path / "spread", ["p3", "p7", "q1", "q2"])
    code, result, err = run(capsys, "probe", "--ckpt", str(ckpt), "--data.path", str(spread),
                            "--epochs", "2", "--out", str(tmp_path / "spread-out"))  # fmt: skip
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and result is None and len(lines) == 1
    assert "2 group(s)" in lines[0] and "p3, p7" in lines[0] and "--allow_group_overlap" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "spread-out").exists()
    code, result, err = run(capsys, "knn", "--ckpt", str(ckpt), "--data.path", str(spread),
                            "--allow_group_overlap", "true", "--out", str(tmp_path / "k"))  # fmt: skip
    assert code == 0 and result["group_overlap"] == {"shared_groups": 2, "allowed": True}
    assert any("evaluated anyway" in w for w in result["warnings"])
    (tmp_path / "confined").mkdir()
    confined = write_manifest(tmp_path / "confined", ["q1", "q2", "q3"])
    code, result, _ = run(capsys, "probe", "--ckpt", str(ckpt), "--data.path", str(confined),
                          "--epochs", "2", "--val_fraction", "0.25",
                          "--out", str(tmp_path / "confined-out"))  # fmt: skip
    assert code == 0 and result["headline"]["metric"] == "macro_auroc"
    assert result["n_groups"]["test"] == 3
    # Each of the 12 training patients on one side only: the counts add up to 12.
    assert result["n_groups"]["train"] + result["n_groups"]["val"] == 12
    assert result["n_groups"]["val"] >= 1 and result["n_val"] % 3 == 0


def test_label_fractions_give_a_curve_and_summary_draws_several(ckpt, tmp_path, capsys):
    from conftest import make_blob_images as blobs

    path = tmp_path / "blobs.npz"
    x_train, y_train = blobs(200, 32, seed=0)
    x_test, y_test = blobs(48, 32, seed=1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    dirs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, result, _ = run(capsys, "probe", "--ckpt", str(ckpt), "--data.path", str(path),
                              "--epochs", "3", "--label_fraction", "[0.05,0.5,1.0]",
                              "--label_seeds", "2", "--seed", str(ord(name)),
                              "--out", str(out))  # fmt: skip
        assert code == 0 and [r["fraction"] for r in result["label_curve"]] == [0.05, 0.5, 1.0]
        assert all(r["n_seeds"] == 2 and r["metric"] == "top1" for r in result["label_curve"])
        assert "runs" not in result  # the JSON line keeps the rows; metrics.json every run
        assert len(json.loads((out / "metrics.json").read_text())["runs"]) == 6
        assert (out / "label_curve.png").stat().st_size > 1000
        dirs.append(str(out))
    assert main(["summary", *dirs, "--out", str(tmp_path / "summary.csv")]) == 0
    printed = capsys.readouterr().out
    assert "| labels | images | top1 (mean ± std) | macro_auroc (mean ± std) | seeds |" in printed
    assert (tmp_path / "label_curves.png").stat().st_size > 1000


def test_finetune_trains_findings_with_bce_on_a_label_fraction(ckpt, multilabel_npz, tmp_path,
                                                               capsys):  # fmt: skip
    code, result, err = run(capsys, "finetune", "--ckpt", str(ckpt), "--data.path",
                            str(multilabel_npz), "--epochs", "1", "--label_fraction", "[0.5,1.0]",
                            "--out", str(tmp_path / "ft"))  # fmt: skip
    assert code == 0, err
    assert [r["fraction"] for r in result["label_curve"]] == [0.5, 1.0]
    assert result["headline"]["metric"] == "macro_auroc"
    assert any("binary cross-entropy" in w for w in result["warnings"])  # mixup off
