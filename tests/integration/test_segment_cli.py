"""`selfsup segment` end to end: metrics.json, overlays, saved predictions that give the
same figures again, attention Jaccard, and one line for what cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.eval.segmentation_metrics import image_figures, summarise
from selfsup.methods import DINO, SimCLR


def _save(model, path: Path, size: int) -> Path:
    meta = {**model.checkpoint_metadata(), "image_size": size, "mean": [0.2], "std": [0.3]}
    torch.save({"state_dict": model.state_dict(), "selfsup": meta}, path)
    return path


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DINO(backbone="vit_tiny", out_dim=64, projection_hidden_dim=32, bottleneck_dim=16,
                 backbone_kwargs={"img_size": 32, "patch_size": 4, "in_chans": 1, "depth": 2})  # fmt: skip
    return _save(model, tmp_path_factory.mktemp("ckpt") / "dino.ckpt", 32)


@pytest.fixture(scope="module")
def resnet_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True, "in_chans": 1},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    return _save(model, tmp_path_factory.mktemp("ckpt") / "simclr.ckpt", 32)


def run(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main([*args, "--data.num_workers", "0", "--cache", "false"])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("{")]
    return code, json.loads(lines[-1]) if lines else None, captured.err


def test_segment_writes_figures_overlays_and_predictions_that_recompute(
    vit_ckpt, seg_npz, tmp_path, capsys
):
    out = tmp_path / "seg"
    code, result, err = run(capsys, "segment", "--ckpt", str(vit_ckpt), "--data.path", str(seg_npz),
                            "--epochs", "8", "--out", str(out), "--save_predictions", "true",
                            "--attention", "true", "--last_blocks", "2")  # fmt: skip
    assert code == 0, err
    assert result["headline"]["metric"] == "mean_foreground_dice"
    assert result["feature_grid"] == [8, 8] and result["size"] == 32
    assert result["units"] == {"distance": "mm", "area": "mm2"}  # the npz's 0.5 x 0.8 mm
    assert result["n_train"] + result["n_val"] == 40 and result["n_test"] == 12
    assert set(result["per_class"]) == {"square", "disc"}
    assert (
        result["per_class"]["square"]["dice"]["n"]
        + result["per_class"]["square"]["empty"]["both"]
        + result["per_class"]["square"]["empty"]["false_positive"]
        == 12
    )
    assert "per_image" not in result  # in metrics.json only
    saved = json.loads((out / "metrics.json").read_text())
    assert len(saved["per_image"]) == 12
    assert (out / "overlays.png").stat().st_size > 0
    # The saved maps give the reported figures again, through the metrics alone.
    pred = np.load(out / "predictions.npz")["m_pred"]
    masks = np.load(seg_npz)["m_test"]
    again = summarise([image_figures(p, m, 3, (0.5, 0.8)) for p, m in zip(pred, masks)],
                      ["background", "square", "disc"], True)  # fmt: skip
    assert again["mean_foreground_dice"] == pytest.approx(result["mean_foreground_dice"])
    assert again["per_class"]["disc"]["hd95"] == pytest.approx(result["per_class"]["disc"]["hd95"])
    attention = result["attention"]
    assert 0 <= attention["mean_of_heads"]["mean"] <= 1
    assert len(attention["per_head_mean"]) == 3 and attention["best_head"]["picked_on"] == "train"


def test_a_resnet_takes_stages_and_a_size_of_its_own(resnet_ckpt, seg_npz, tmp_path, capsys):
    code, result, err = run(capsys, "segment", "--ckpt", str(resnet_ckpt), "--data.path",
                            str(seg_npz), "--epochs", "3", "--stages", "2", "--size", "64",
                            "--label_fraction", "[0.5,1.0]", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    assert result["feature_grid"] == [16, 16]  # 64 px, the CIFAR stem's stage 3 (8x smaller)
    assert [row["fraction"] for row in result["label_curve"]] == [0.5, 1.0]
    assert (tmp_path / "r" / "label_curve.png").is_file()


@pytest.mark.parametrize(
    ("which", "extra", "words"),
    [
        ("resnet", ["--attention", "true"], "drop --attention"),
        ("resnet", ["--last_blocks", "2"], "for a ResNet use --stages"),
        ("vit", ["--stages", "2"], "for a ViT use --last_blocks"),
        ("vit", ["--last_blocks", "9"], "the ViT has 2 blocks"),
        ("vit", ["--size", "30"], "not a multiple of"),
        ("vit", ["--val_fraction", "1.5"], "--val_fraction 1.5"),
        ("vit", ["--finetune", "true", "--attention", "true"], "without --finetune"),
    ],
)
def test_options_that_cannot_work_are_one_line(vit_ckpt, resnet_ckpt, seg_npz, tmp_path, capsys,
                                                which, extra, words):  # fmt: skip
    ckpt = vit_ckpt if which == "vit" else resnet_ckpt
    code, result, err = run(capsys, "segment", "--ckpt", str(ckpt), "--data.path", str(seg_npz),
                            "--out", str(tmp_path / "x"), *extra)  # fmt: skip
    assert code == 2 and result is None
    assert words in err and len(err.strip().splitlines()) == 1


def test_a_mask_of_the_wrong_size_stops_before_any_feature(vit_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 32, 32), np.uint8), m_train=np.zeros((4, 32, 30), np.uint8),
             x_test=np.zeros((2, 32, 32), np.uint8), m_test=np.zeros((2, 32, 32), np.uint8),
             mask_classes=np.array(["background", "organ"]))  # fmt: skip
    code, _, err = run(capsys, "segment", "--ckpt", str(vit_ckpt), "--data.path", str(bad))
    assert code == 2 and "m_train[0]: the mask is 32x30 but its image is 32x32" in err


def test_data_inspect_gives_each_class_its_pixel_share_and_draws_the_masks(
    seg_npz, tmp_path, capsys
):
    out = tmp_path / "preview.png"
    assert main(["data", "inspect", "--data.path", str(seg_npz), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    masks = np.load(seg_npz)["m_train"]
    share = np.bincount(masks.reshape(-1), minlength=3) / masks.size
    assert info["mask_classes"] == ["background", "square", "disc"]
    assert list(info["class_pixel_fraction"].values()) == pytest.approx(share, abs=1e-4)
    lacking = [int(sum(not (m == c).any() for m in masks)) for c in (1, 2)]
    assert info["images_without_class"] == {"square": lacking[0], "disc": lacking[1]}
    assert lacking[0] == 8  # every fifth image has no square
    assert info["groups"] == 10 and out.stat().st_size > 0


def test_finetune_reports_the_epoch_best_on_validation(vit_ckpt, seg_npz, tmp_path, capsys):
    code, result, err = run(capsys, "segment", "--ckpt", str(vit_ckpt), "--data.path",
                            str(seg_npz), "--finetune", "true", "--epochs", "3",
                            "--finetune_lr", "3e-3", "--out", str(tmp_path / "ft"))  # fmt: skip
    assert code == 0, err
    curve = result["val_curve"]
    assert len(curve) == 3 and result["finetune"] is True
    assert result["epoch"] == curve.index(max(curve))  # the first best epoch, not the last
    assert result["val_mean_foreground_dice"] == pytest.approx(max(curve), abs=1e-4)
    assert result["n_train"] + result["n_val"] == 40 and result["layer_decay"] == 0.75
    code, _, err = run(capsys, "segment", "--ckpt", str(vit_ckpt), "--data.path", str(seg_npz),
                       "--finetune", "true", "--devices", "2")  # fmt: skip
    assert code == 2 and "one process" in err
