import pytest
import torch

from conftest import naive_weighted_knn
from selfsup.knn import knn_scores, knn_top1
from selfsup.schedules import linear, warmup_cosine


@pytest.mark.parametrize("k", [1, 5, 20, 500])
def test_knn_matches_naive_loop(k):
    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    train_y = torch.randint(0, 4, (60,), generator=g)
    scores = knn_scores(train, train_y, test, 4, ks=(k,), temperature=0.07, chunk_size=7)[k]
    assert torch.equal(scores.argmax(1), naive_weighted_knn(train, train_y, test, k, 0.07, 4))


def test_knn_small_test_set_and_perfect_clusters():
    centers = torch.eye(3) * 10
    train = centers.repeat_interleave(10, 0) + 0.1 * torch.randn(30, 3)
    train_y = torch.arange(3).repeat_interleave(10)
    test = centers + 0.1 * torch.randn(3, 3)  # 3 queries: far below DINO's 100-image floor
    assert knn_top1(train, train_y, test, torch.arange(3), k=20) == 1.0


def test_warmup_cosine_closed_form():
    assert warmup_cosine(0, 100, 10, 1.0, 0.0) == 0.0
    assert warmup_cosine(5, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(150, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert linear(5, 10, 0.996, 1.0) == pytest.approx(0.998)


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
