"""selfsup knn's evaluation (selfsup.eval.knn): unreadable images left out and named, warnings on one class and on k above the training images."""

import torch


class ChannelMeans(torch.nn.Module):
    """A stand-in backbone: per-channel means, so a colour decides the class."""

    embed_dim = 3

    def forward(self, x):
        return x.mean((2, 3))


def stand_in(tmp_path):
    from selfsup.checkpoints import LoadedBackbone

    meta = {"image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3, "loaded": "student",
            "pool": "avg"}  # fmt: skip
    return LoadedBackbone(ChannelMeans(), meta, str(tmp_path / "stand-in.ckpt"))


def colour_folder(root, n_train=12, n_test=6, classes=("blue", "red")):
    from PIL import Image

    rgb = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 220, 20)}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            cls = classes[i % len(classes)]
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), rgb[cls]).save(root / split / cls / f"{i:02d}.png")
    return root


def test_knn_leaves_unreadable_images_out_and_says_which(tmp_path, capsys):
    from selfsup.eval.knn import run_knn

    data = colour_folder(tmp_path / "data")
    broken = [data / "train" / "blue" / "04.png", data / "train" / "red" / "03.png",
              data / "test" / "red" / "01.png"]  # fmt: skip  # dataset order
    for f in broken:
        f.write_bytes(b"not a png")
    result, _ = run_knn(stand_in(tmp_path), str(data), ks=(3,), num_workers=0)
    # Left out, not replaced by the next file: 10 of 12 train and 5 of 6 test images.
    assert result["n_train"] == 10 and result["n_test"] == 5 and result["top1"] == 1.0
    assert result["skipped_images"] == [str(f) for f in broken] and result["n_skipped"] == 3
    assert result["confusion_matrix"] == [[3, 0], [0, 2]]  # blue 0, 2, 4 / red 3, 5
    err = [line for line in capsys.readouterr().err.splitlines() if "selfsup: warning:" in line]
    assert len(err) == 2 == len(result["warnings"])
    assert err[0] == f"selfsup: warning: {result['warnings'][0]}"
    assert "2 of 12 train images cannot be read and are left out" in err[0]
    assert "1 of 6 test images" in err[1] and str(broken[2]) in err[1]
    # The cache remembers which files were left out; a mended file is read again.
    again, _ = run_knn(stand_in(tmp_path), str(data), ks=(3,), num_workers=0)
    assert again["skipped_images"] == result["skipped_images"]
    colour_folder(tmp_path / "fresh")
    broken[2].write_bytes((tmp_path / "fresh" / "test" / "red" / "01.png").read_bytes())
    mended, _ = run_knn(stand_in(tmp_path), str(data), ks=(3,), num_workers=0)
    assert mended["n_test"] == 6 and mended["n_skipped"] == 2


def test_knn_warns_about_one_class_and_a_k_above_the_training_images(tmp_path, capsys):
    from selfsup.eval.knn import run_knn

    data = colour_folder(tmp_path / "data", n_train=5, n_test=4, classes=("red",))
    result, classes = run_knn(stand_in(tmp_path), str(data), ks=(20, 200), num_workers=0)
    assert result["top1"] == 1.0 and classes == ["red"] and result["skipped_images"] == []
    warnings = result["warnings"]
    assert len(warnings) == 2
    assert warnings[0].startswith("the training split has one class (red)")
    assert "says nothing about the features" in warnings[0]
    assert warnings[1].startswith("k = 20, 200 but there are only 5 training images")
    err = capsys.readouterr().err.splitlines()
    assert [f"selfsup: warning: {w}" for w in warnings] == [e for e in err if "warning" in e]
