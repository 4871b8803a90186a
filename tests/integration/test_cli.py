"""End to end through the `selfsup` command, in-process: pretrain -> run directory -> knn JSON."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, naive_weighted_knn
from selfsup.cli import main

CONFIG = str(REPO / "configs" / "simclr" / "resnet18_cifar.yaml")
FAST = [
    "--data.batch_size",
    "16",
    "--data.num_workers",
    "0",
    "--trainer.precision",
    "32",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.log_every_n_steps",
    "1",
]


def small_heads(config: str) -> list[str]:
    """Narrow heads, so a CPU test spends its time in the backbone."""
    if "/mae/" in config:
        return ["--model.init_args.decoder_depth", "1"]
    if "/ijepa/" in config:
        return ["--model.init_args.predictor_depth", "1"]
    return ["--model.init_args.projection_hidden_dim", "64"]


def pretrain(run: Path, data: Path, *extra: str, config: str = CONFIG) -> int:
    return main(
        [
            "pretrain",
            "--config",
            config,
            "--data.path",
            str(data),
            "--trainer.default_root_dir",
            str(run),
            *FAST,
            *small_heads(config),
            *extra,
        ]
    )


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def simclr_run(tiny_npz, tmp_path_factory) -> Path:
    """One tiny SimCLR run shared by the tests of this session."""
    run = tmp_path_factory.mktemp("runs") / "simclr"
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "3") == 0
    return run


def test_pretrain_writes_a_flat_run_directory(simclr_run):
    assert (simclr_run / "config.yaml").is_file()
    assert (simclr_run / "checkpoints" / "last.ckpt").is_file()
    assert (simclr_run / "metrics.csv").is_file()
    assert not (simclr_run / "lightning_logs").exists()
    assert not list(simclr_run.rglob("version_*"))
    rows = read_metrics(simclr_run)
    assert any(r.get("train/loss") for r in rows)
    assert any(r.get("val/knn_top1") for r in rows)
    assert any(r.get("val/knn_top1_random_init") for r in rows)


def test_checkpoint_carries_plain_metadata(simclr_run):
    ckpt = torch.load(
        simclr_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    meta = ckpt["selfsup"]
    assert meta["backbone"] == "resnet18" and meta["backbone_kwargs"] == {
        "cifar_stem": True,
        "zero_init_last": False,
    }
    assert meta["image_size"] == 32 and meta["pool"] == "avg"
    assert meta["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert meta["student_prefix"] == "backbone." and meta["teacher_prefix"] is None
    assert ckpt["global_step"] == 3


def test_knn_prints_json_last(simclr_run, tiny_npz, capsys):
    """The JSON's figures are the weighted kNN of the checkpoint's own features, computed
    here by a naive loop (k=20, and k=200 clipped to the 96 training images)."""
    from selfsup.checkpoints import load_backbone
    from selfsup.data.datasets import open_dataset

    loaded = load_backbone(simclr_run)
    transform = loaded.eval_transform()

    def features(split):
        ds = open_dataset(str(tiny_npz), split)
        with torch.no_grad():
            x = torch.stack([transform(ds[i][0]) for i in range(len(ds))])
            return loaded.backbone(x), torch.as_tensor(ds.targets)

    (train, train_y), (test, test_y) = features("train"), features("test")
    expected = {k: (naive_weighted_knn(train, train_y, test, k, 0.07, 4) == test_y).float().mean()
                for k in (20, 96)}  # fmt: skip
    for ckpt in (simclr_run, simclr_run / "checkpoints" / "last.ckpt"):
        assert (
            main(
                [
                    "knn",
                    "--ckpt",
                    str(ckpt),
                    "--data.path",
                    str(tiny_npz),
                    "--data.num_workers",
                    "0",
                    "--feature_precision",
                    "32",  # the naive reference above runs in fp32
                ]
            )
            == 0
        )
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["task"] == "knn" and result["k"] == 20
        assert result["n_train"] == 96 and result["n_test"] == 48
        assert result["top1"] == pytest.approx(float(expected[20]), abs=1e-6)
        assert result["top1_k200"] == pytest.approx(float(expected[96]), abs=1e-6)


def test_restart_in_the_same_directory_resumes(simclr_run, tiny_npz, tmp_path):
    run = tmp_path / "resumed"
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "2") == 0
    first = read_metrics(run)
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "4") == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt"
    ]  # no last-v1.ckpt
    rows = read_metrics(run)
    assert len(rows) > len(first)  # history kept across the restart
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == sorted(set(steps)) and max(steps) >= 3  # continued, not restarted from 0


def test_bad_inputs_stop_before_training_with_one_clear_message(tiny_npz, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8, 3), np.uint8))
    floats = tmp_path / "floats.npz"
    np.savez(floats, x_train=np.zeros((40, 32, 32, 3), np.float32), y_train=np.zeros(40))
    gray = tmp_path / "gray.npz"
    np.savez(gray, x_train=np.zeros((40, 32, 32), np.uint8), y_train=np.zeros(40, np.uint8))
    cases = [
        (["--data.path", str(tmp_path / "missing.npz")], "does not exist"),
        (["--data.path", str(gray), "--data.batch_size", "8"], "in_chans: 1"),
        (
            [
                "--data.path",
                str(tiny_npz),
                "--data.batch_size",
                "8",
                "--trainer.sync_batchnorm",
                "true",
            ],
            "needs GPUs",
        ),
        (["--data.path", str(bad)], "x_train"),
        (["--data.path", str(floats)], "uint8"),
        (["--data.path", str(tiny_npz), "--data.batch_size", "1"], "at least 2"),
        (["--data.path", str(tiny_npz), "--data.batch_size", "500"], "Lower data.batch_size"),
        (
            [
                "--data.path",
                str(tiny_npz),
                "--data.batch_size",
                "16",
                "--data.transform.init_args.size",
                "30",
                "--model.init_args.backbone",
                "vit_tiny",
                "--model.init_args.backbone_kwargs",
                '{"img_size": 32, "patch_size": 4}',
            ],
            "patch size",
        ),
        (["--data.path", str(tiny_npz), "--model.class_path", "selfsup.methods.SimCRL"],
         "Did you mean SimCLR"),
        (["--data.path", str(tiny_npz), "--model.class_path", "selfsup.methods.MAE",
          "--model.init_args.backbone", "resnet18"], "MAE masks image patches, so it needs a ViT"),
    ]  # fmt: skip
    for args, message in cases:
        code = main(
            [
                "pretrain",
                "--config",
                CONFIG,
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
                *args,
            ]
        )
        err = capsys.readouterr().err
        assert code == 2, (args, err[-2000:])
        assert message in err, (args, err[-2000:])
        assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_trainer_shape_must_match_the_slurm_job(tiny_npz, tmp_path, monkeypatch, capsys):
    for key, value in {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "1",
                       "SLURM_JOB_NAME": "pretrain", "SLURM_JOB_ID": "7"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    code = main(["pretrain", "--config", CONFIG, "--data.path", str(tiny_npz),
                 "--trainer.devices", "2", "--trainer.default_root_dir", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "use --trainer.devices 4" in err and "Traceback" not in err


def test_wandb_switch_without_login_logs_offline_and_says_so(
    tiny_npz, tmp_path, monkeypatch, capsys
):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run = tmp_path / "wb"
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "2", "--wandb", "true") == 0
    err = capsys.readouterr().err
    assert err.count("wandb is not logged in; logging offline") == 1
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert offline[0].name.endswith(run_id)


METHOD_CONFIGS = [
    "configs/byol/resnet18_cifar.yaml",
    "configs/byol/vit_tiny_cifar.yaml",
    "configs/dino/resnet18_cifar.yaml",
    "configs/dino/vit_tiny_cifar.yaml",
    "configs/ijepa/vit_tiny_cifar.yaml",
    "configs/mae/vit_tiny_cifar.yaml",
    "configs/triplet/resnet18_cifar.yaml",
    "configs/triplet/vit_tiny_cifar.yaml",
]


@pytest.mark.parametrize("config", METHOD_CONFIGS)
def test_other_methods_pretrain_and_evaluate(config, tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "2", config=str(REPO / config)) == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    has_teacher = ckpt["selfsup"]["teacher_prefix"] == "teacher_backbone."
    assert has_teacher == any(m in config for m in ("byol", "dino", "ijepa"))
    # DINO and I-JEPA evaluate their teacher (target encoder), as their papers do.
    evaluated = "teacher" if any(m in config for m in ("dino", "ijepa")) else "student"
    assert ckpt["selfsup"]["eval_backbone"] == evaluated
    knn = ["knn", "--ckpt", str(run), "--data.path", str(tiny_npz), "--data.num_workers", "0"]
    capsys.readouterr()
    assert main(knn) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "knn" and result["backbone"] == evaluated
    if has_teacher:  # the other set of weights loads too
        other = "student" if evaluated == "teacher" else "teacher"
        assert main([*knn, "--backbone", other]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["backbone"] == other
    if "dino/vit" in config:  # DINO's linear evaluation features: CLS of the last blocks + patches
        probe = ["probe", "--ckpt", str(run), "--data.path", str(tiny_npz), "--data.num_workers", "0",
                 "--epochs", "2", "--last_blocks", "2", "--avgpool_patches", "true"]  # fmt: skip
        assert main(probe) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["features"] == "last2+avgpatch" and result["backbone"] == "teacher"


def test_reconstruct_writes_a_grid_per_image(tiny_npz, simclr_run, tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "mae"
    config = str(REPO / "configs/mae/vit_tiny_cifar.yaml")
    assert pretrain(run, tiny_npz, "--trainer.max_steps", "2", config=config) == 0
    images = np.load(tiny_npz)["x_test"][:2]
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(im).save(paths[-1])
    out = tmp_path / "recon"
    capsys.readouterr()
    argv = [
        "reconstruct",
        "--ckpt",
        str(run),
        "--image",
        f"[{','.join(map(str, paths))}]",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "reconstruct" and len(result["files"]) == 2
    # Three 32 px panels, repeated 3x to >= 96 px, with 2 px padding around each.
    with Image.open(result["files"][0]) as grid:
        assert grid.size == (3 * 96 + 4 * 2, 96 + 2 * 2) and grid.mode == "RGB"
    # The masked panel shows the mask: 75 % of the 8 x 8 patches black (the images' blobs
    # and noise are never exactly black), and the masked-patch error is a real number.
    with Image.open(result["files"][0]) as grid:
        masked = np.asarray(grid)[2:98, 100:196].reshape(8, 12, 8, 12, 3)
    assert (masked.max(axis=(1, 3, 4)) == 0).sum() == 48
    assert all(np.isfinite(v) and v > 0 for v in result["mse_masked"])
    # A method without a decoder is refused in one line that says what to give.
    assert main(["reconstruct", "--ckpt", str(simclr_run), "--image", str(paths[0]),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "give an MAE checkpoint" in capsys.readouterr().err


def test_finetune_and_probe_print_top1_and_write_their_metrics(
    simclr_run, tiny_npz, tmp_path, capsys
):
    capsys.readouterr()
    out = tmp_path / "ft"
    argv = ["finetune", "--ckpt", str(simclr_run), "--data.path", str(tiny_npz), "--epochs", "2",
            "--data.batch_size", "16", "--data.num_workers", "0", "--accelerator", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "finetune" and result["n_test"] == 48
    # The epoch reported is the one best on the validation split carved from train.
    assert result["n_train"] + result["n_val"] == 96 and result["n_val"] > 0
    assert len(result["val_curve"]) == 2
    assert result["epoch"] == result["val_curve"].index(max(result["val_curve"]))
    # top1 is what the saved confusion matrix says (the matrix counts each test image once).
    confusion = np.array(json.loads((out / "metrics.json").read_text())["confusion_matrix"])
    assert confusion.sum() == 48
    assert result["top1"] == pytest.approx(np.trace(confusion) / 48)
    assert (out / "confusion_matrix.png").is_file()
    argv = ["probe", "--ckpt", str(simclr_run), "--data.path", str(tiny_npz), "--epochs", "5",
            "--data.num_workers", "0", "--accelerator", "cpu"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "probe" and result["n_train"] + result["n_val"] == 96
    saved = json.loads((simclr_run / "eval" / "probe-tiny" / "metrics.json").read_text())
    confusion = np.array(saved["confusion_matrix"])  # beside the run
    assert result["top1"] == pytest.approx(np.trace(confusion) / confusion.sum())
    # The pick is the grid point best on validation: its accuracy is the grid's maximum.
    assert result["val_top1"] == pytest.approx(max(result["grid_val_top1"]), abs=1e-4)
