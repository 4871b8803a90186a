"""Pictures end to end: a short DINO ViT run logs attention maps to an offline wandb run;
`selfsup attention` and `selfsup embed` on its checkpoint; MAE reconstructions as PNGs."""

import json

import numpy as np
from PIL import Image
from test_cli import pretrain

from conftest import REPO
from selfsup.cli import main


def test_dino_run_logs_attention_to_offline_wandb_then_attention_and_embed(
    tiny_npz, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "dino"
    config = str(REPO / "configs/dino/vit_tiny_cifar.yaml")
    assert pretrain(run, tiny_npz, "--trainer.max_epochs", "1", "--wandb", "true",
                    "--pictures.every_n_epochs", "1", "--knn_monitor.every_n_epochs", "0",
                    config=config) == 0  # fmt: skip
    logged = list((run / "wandb").rglob("media/images/pictures/attention*.png"))
    assert logged, sorted(str(p) for p in (run / "wandb").rglob("*"))[:40]
    assert not (run / "pictures").exists()  # wandb took them

    x = np.load(tiny_npz)["x_test"]
    square, wide = tmp_path / "square.png", tmp_path / "wide.png"
    Image.fromarray(x[0]).save(square)
    Image.fromarray(np.concatenate([x[1], x[2]], axis=1)).save(wide)  # 32 x 64
    capsys.readouterr()
    out = tmp_path / "attention"
    assert main(["attention", "--ckpt", str(run), "--image", f"[{square},{wide}]",
                 "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["backbone"] == "teacher" and result["heads"] == 3
    assert Image.open(out / "wide" / "head-0.png").size == (64, 32)
    assert Image.open(out / "square" / "mask.png").size == (32, 32)
    assert (out / "square" / "mean.png").is_file() and (out / "overview.png").is_file()

    plot = tmp_path / "embed.png"
    assert main(["embed", "--ckpt", str(run), "--data.path", str(tiny_npz), "--out", str(plot),
                 "--data.num_workers", "0"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_points"] == 48 and result["n_classes"] == 4 and plot.is_file()


def test_mae_run_without_wandb_writes_reconstruction_pictures(tiny_npz, tmp_path, capsys):
    run = tmp_path / "mae"
    config = str(REPO / "configs/mae/vit_tiny_cifar.yaml")
    assert pretrain(run, tiny_npz, "--trainer.max_epochs", "1", "--pictures.every_n_epochs", "1",
                    "--knn_monitor.every_n_epochs", "0", config=config) == 0  # fmt: skip
    assert (run / "pictures" / "reconstruction-epoch0000.png").is_file()
    attention = Image.open(run / "pictures" / "attention-epoch0000.png")
    # 4 images x (image | mean attention | mask), 32 px tiles with 2 px padding.
    assert attention.size == (3 * 34 + 2, 4 * 34 + 2)

    # Two images named 0.png in different folders: two files, each from its own image.
    x = np.load(tiny_npz)["x_test"][:2]
    paths = []
    for folder, image in zip(("a", "b"), x, strict=True):
        (tmp_path / "test" / folder).mkdir(parents=True)
        paths.append(tmp_path / "test" / folder / "0.png")
        Image.fromarray(image).save(paths[-1])
    out = tmp_path / "recon"
    capsys.readouterr()
    assert main(["reconstruct", "--ckpt", str(run), "--image", f"[{','.join(map(str, paths))}]",
                 "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["files"] == [str(out / "a_0_mae.png"), str(out / "b_0_mae.png")]
    for file, own, other in zip(result["files"], x, x[::-1], strict=True):
        with Image.open(file) as grid:  # the first panel: the image, 3x upscaled, 2 px padding
            original = np.asarray(grid.convert("RGB"))[2 : 2 + 96 : 3, 2 : 2 + 96 : 3]
        assert np.abs(original.astype(int) - own).max() <= 2
        assert np.abs(original.astype(int) - other).mean() > 10
