"""Medical data as it comes, end to end through `selfsup`: a DICOM tree and a folder of
NIfTI volumes pretrain, a labelled manifest of DICOM files evaluates, `selfsup data
inspect` says what it reads, real chest X-rays give the same probe from DICOM as from
the npz, and a run on volumes resumes exactly."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from conftest import REPO
from selfsup.cli import main

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PNEUMONIA = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"
GRAY = ["--data.channels", "1", "--model.init_args.backbone_kwargs", '{"cifar_stem": true, "in_chans": 1}',
        "--data.transform.init_args.grayscale", "true", "--data.transform.init_args.mean", "[0.5]",
        "--data.transform.init_args.std", "[0.25]", "--data.transform.init_args.size", "32",
        "--data.batch_size", "8", "--data.num_workers", "0", "--trainer.precision", "32",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.init_args.projection_hidden_dim", "64", "--knn_monitor.every_n_epochs", "0",
        "--pictures.every_n_epochs", "0"]  # fmt: skip
CONFIG = str(REPO / "configs/simclr/resnet18_cifar.yaml")


def chest_xray_script():
    if str(REPO / "benchmarks") not in sys.path:  # the script imports the benchmarks' lib
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("chest", REPO / "benchmarks/chest_xray_dicom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory) -> Path:
    """CT and MR slices, a multi-frame ultrasound, a dose grid and a truncated file."""
    root = tmp_path_factory.mktemp("dicom") / "study"
    for i, name in enumerate(["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm",
                              "MR_small_jp2klossless.dcm", "693_J2KI.dcm"]):  # fmt: skip
        (root / f"series{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(FILES / name, root / f"series{i % 2}" / f"IM{i:04d}")
    shutil.copy(FILES / "examples_ybr_color.dcm", root / "us.dcm")  # 30 frames
    shutil.copy(FILES / "rtdose.dcm", root / "dose.dcm")  # not an image
    (root / "broken.dcm").write_bytes((FILES / "MR_small.dcm").read_bytes()[:3000])
    return root


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """Four small volumes with different shapes, affines and contrasts."""
    root = tmp_path_factory.mktemp("nifti")
    rng = np.random.default_rng(0)
    for i in range(4):
        data = rng.normal(100 * (i + 1), 20, (40 + 4 * i, 36, 12 + i)).astype(np.float32)
        data[:, :, 0] = 0  # a background slice
        affine = np.diag([1.0, 1.0, 2.5, 1.0]) if i % 2 else np.diag([-1.0, 1.2, 3.0, 1.0])
        nib.Nifti1Image(data, affine).to_filename(root / f"case{i}.nii.gz")
    return root


def test_pretraining_on_a_dicom_tree_says_what_it_read_and_skipped(dicom_tree, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["pretrain", "--config", CONFIG, "--data.path", str(dicom_tree), "--data.window",
            "percentile", "--trainer.max_steps", "5", "--trainer.default_root_dir", str(run), *GRAY]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("selfsup: data"))
    assert "35 images" in line and "6 DICOM files (35 frames)" in line
    assert "1 unreadable, 1 not images" in line
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


def test_pretraining_on_a_folder_of_volumes_in_2_5d(volumes, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["pretrain", "--config", CONFIG, "--data.path", str(volumes), "--data.slice_context", "1",
            "--data.slices_per_volume", "4", "--trainer.max_steps", "3",
            "--trainer.default_root_dir", str(run), *GRAY]  # fmt: skip
    argv[argv.index("--data.channels") + 1] = "3"
    argv[argv.index('{"cifar_stem": true, "in_chans": 1}')] = '{"cifar_stem": true, "in_chans": 3}'
    argv[argv.index("--data.transform.init_args.mean") + 1] = "[0.5,0.5,0.5]"
    argv[argv.index("--data.transform.init_args.std") + 1] = "[0.25,0.25,0.25]"
    assert main(argv) == 0
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("selfsup: data"))
    assert "4 volumes x 4 slices per epoch" in line and "3 channel(s)" in line


def test_data_inspect_prints_the_summary_and_writes_the_grid(dicom_tree, volumes, tmp_path, capsys):
    from PIL import Image

    for data, expect in ((dicom_tree, {"dicom_files": 6, "not_images": 1, "unreadable": 1}),
                         (volumes, {"volumes": 4, "items": 32})):  # fmt: skip
        out = tmp_path / f"{data.name}.png"
        assert main(["data", "inspect", "--data.path", str(data), "--out", str(out),
                     "--data.window", "percentile"]) == 0  # fmt: skip
        info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert all(info[k] == v for k, v in expect.items()), info
        assert 0.0 <= info["sample_range"][0] < info["sample_range"][1] <= 1.0
        with Image.open(out) as grid:
            assert grid.size[0] > 400 and grid.size[1] > 200


@pytest.fixture(scope="module")
def chest_xrays(tmp_path_factory) -> tuple[Path, Path]:
    """120 training and 120 test chest X-rays as a DICOM tree with a manifest, and as an npz."""
    script = chest_xray_script()
    root = tmp_path_factory.mktemp("chest")
    manifest = script.write_dicom_tree(PNEUMONIA, root / "dicom", limit=120)
    npz = script.subset_npz(PNEUMONIA, root / "chest.npz", limit=120)
    return manifest, npz


def test_chest_xrays_give_the_same_probe_from_dicom_as_from_the_npz(chest_xrays, tmp_path, capsys):
    manifest, npz = chest_xrays
    run = tmp_path / "run"
    argv = ["pretrain", "--config", CONFIG, "--data.path", str(manifest), "--trainer.max_steps", "3",
            "--trainer.default_root_dir", str(run), *GRAY]  # fmt: skip
    argv[argv.index("--data.transform.init_args.size") + 1] = "28"
    assert main(argv) == 0
    results = []
    for data in (manifest, npz):
        for task in ("knn", "probe"):
            extra = ["--epochs", "10"] if task == "probe" else []
            # fp32 features: the readers' pixels are compared, not bf16's rounding of them
            assert main([task, "--ckpt", str(run), "--data.path", str(data), "--data.num_workers", "0",
                         "--cache", "false", "--out", str(tmp_path / f"{task}-{data.suffix}"),
                         "--feature_precision", "32", *extra]) == 0  # fmt: skip
            results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    dicom_knn, dicom_probe, npz_knn, npz_probe = results
    for a, b in ((dicom_knn, npz_knn), (dicom_probe, npz_probe)):
        assert a["n_train"] == b["n_train"] and a["n_test"] == b["n_test"] == 120
        assert a["top1"] == pytest.approx(b["top1"], abs=1e-6)
        assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-6)


def test_resume_on_volumes_is_exact_at_an_epoch_boundary(volumes, tmp_path):
    """Random slice choice included: straight through, or stopped (SIGTERM) as epoch 1
    ends and resumed."""

    def run(path: Path, *extra: str) -> int:
        return main(["pretrain", "--config", CONFIG, "--data.path", str(volumes),
                     "--data.slices_per_volume", "4", "--trainer.max_epochs", "2",
                     "--seed_everything", "3", "--trainer.deterministic", "true",
                     "--trainer.default_root_dir", str(path), *GRAY, *extra])  # fmt: skip

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(straight) == 0
    with pytest.raises(SystemExit):
        run(resumed, "--trainer.callbacks+=test_stop_and_resume.StopAfterFirstEpoch")
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert run(resumed) == 0
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for name, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][name].float(), atol=1e-6), name
