"""The linear probe and the evaluation metrics, against constructions with known answers."""

import itertools

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from selfsup.eval.linear_grid import LinearGrid, train_linear_grid
from selfsup.eval.metrics import classification_metrics
from selfsup.eval.probe import run_probe
from selfsup.eval.splits import group_split


def separable(n: int, num_classes: int, dim: int, seed: int):
    """Class c sits around 3 * e_c in a noisy space: linearly separable by construction."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, dim, generator=g) * 0.3
    x[torch.arange(n), y] += 3.0
    return x, y


def test_probe_reaches_100_percent_on_separable_features():
    train_f, train_y = separable(400, 5, 16, seed=0)
    test_f, test_y = separable(200, 5, 16, seed=1)
    result = run_probe(train_f, train_y, test_f, test_y, epochs=10, batch_size=64)
    assert result["top1"] == 1.0 and result["val_top1"] == 1.0
    assert result["n_train"] + result["n_val"] == 400 and result["n_val"] == 40
    assert result["balanced_accuracy"] == 1.0 and len(result["grid_val_top1"]) == 18


def test_each_head_of_the_grid_equals_a_head_trained_alone_with_torch_sgd():
    x, y = separable(100, 3, 8, seed=0)
    lrs, wds, epochs, bs = (0.1, 1.0), (0.0, 1e-2), 3, 32
    grid_heads, grid = train_linear_grid(x, y, 3, lrs, wds, epochs=epochs, batch_size=bs, seed=7)
    assert [(h["lr"], h["weight_decay"]) for h in grid] == list(itertools.product(lrs, wds))
    # The same initial weights and batches, one head at a time, with torch's own SGD.
    torch.manual_seed(7)
    init = LinearGrid(len(grid), 8, 3)
    for h, hp in enumerate(grid):
        w = init.weight[h].detach().clone().requires_grad_(True)
        b = init.bias[h, 0].detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([w, b], lr=hp["lr"], momentum=0.9, weight_decay=hp["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * 4)
        g = torch.Generator().manual_seed(7)
        for _ in range(epochs):
            order = torch.randperm(100, generator=g)
            for start in range(0, 100, bs):
                idx = order[start : start + bs]
                loss = torch.nn.functional.cross_entropy(x[idx] @ w + b, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        assert torch.allclose(grid_heads.weight[h], w, atol=1e-5), hp
        assert torch.allclose(grid_heads.bias[h, 0], b, atol=1e-5), hp


def test_the_probe_validates_on_the_group_split_of_its_training_split():
    train_f, train_y = separable(120, 4, 8, seed=0)
    test_f, test_y = separable(40, 4, 8, seed=1)
    result = run_probe(train_f, train_y, test_f, test_y, val_fraction=0.25, epochs=1, seed=3)
    fit, val = group_split(train_y.numpy(), None, 0.25, seed=3)
    assert (result["n_train"], result["n_val"]) == (len(fit), len(val)) == (90, 30)


def test_metrics_against_naive_definitions():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(60, 2, generator=g)
    labels = torch.tensor([0] * 45 + [1] * 15)  # imbalanced, binary
    probs = scores.softmax(1)
    m = classification_metrics(probs, labels, ["healthy", "lesion"])
    pred = scores.argmax(1)
    per_class = [float((pred[labels == c] == c).float().mean()) for c in (0, 1)]
    assert m["balanced_accuracy"] == pytest.approx(sum(per_class) / 2)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert m["per_class_accuracy"]["lesion"] == pytest.approx(per_class[1], abs=1e-6)
    p = probs[:, 1]
    pairs = list(itertools.product(p[labels == 1].tolist(), p[labels == 0].tolist()))
    naive = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert m["auroc"] == pytest.approx(naive) == pytest.approx(roc_auc_score(labels, p))
    assert m["headline"] == {"metric": "top1", "value": m["top1"]}
    assert sum(map(sum, m["confusion_matrix"])) == 60


def test_many_class_metrics_equal_sklearn_with_a_class_missing_from_the_test_split():
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(90, 4, generator=g).softmax(1)
    labels = torch.arange(90) % 3  # class 3 never in the test split, but predicted
    probs[::7, 3] += 2.0
    m = classification_metrics(probs, labels)
    pred = probs.argmax(1)
    assert (pred == 3).any()
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    for c in range(3):
        expected = roc_auc_score((labels == c).long(), probs[:, c])
        assert m["per_class_auroc"][str(c)] == pytest.approx(expected)
    assert m["per_class_auroc"]["3"] is None  # no test image: no ROC curve
    assert m["macro_auroc"] == pytest.approx(
        sum(m["per_class_auroc"][str(c)] for c in range(3)) / 3
    )


def test_top5_for_many_classes():
    scores = torch.arange(10.0).repeat(3, 1)  # every row ranks 9, 8, ..., 0
    m = classification_metrics(scores, torch.tensor([9, 5, 0]))
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == pytest.approx(2 / 3)


class ChannelMeans(torch.nn.Module):
    """A stand-in backbone whose features (per-channel means) crops and flips barely move."""

    embed_dim = 3

    def forward(self, x):
        return x.mean((2, 3))


def colour_images(n: int, seed: int):
    """Class c: noisy images whose channel c is bright (linearly separable channel means)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (torch.rand(n, 3, 16, 16, generator=g) * 80).to(torch.uint8)
    x[torch.arange(n), y] += 150
    return [(x[i], int(y[i])) for i in range(n)], y


def test_augmented_probe_trains_on_new_views_each_epoch_and_separates_classes():
    from torchvision.transforms import v2

    from selfsup.eval.probe import SeededViews, run_probe_augmented

    train, train_y = colour_images(60, seed=0)
    test, test_y = colour_images(30, seed=1)
    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                            v2.RandomResizedCrop(8, scale=(0.2, 1.0)), v2.RandomHorizontalFlip()])  # fmt: skip
    views = SeededViews(train, transform, seed=0)
    # Views depend on (seed, epoch, index) only: equal on reload, new each epoch.
    first = views[5][0]
    assert torch.equal(views[5][0], first)
    views.epoch = 1
    assert not torch.equal(views[5][0], first)
    views.epoch = 0
    backbone = ChannelMeans()
    eval_view = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Resize(8)])
    train_f = torch.stack([backbone(eval_view(x)[None])[0] for x, _ in train])
    test_f = torch.stack([backbone(eval_view(x)[None])[0] for x, _ in test])
    seen = []
    backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    result = run_probe_augmented(backbone, views, train_f, train_y, test_f, test_y,
                                 val_fraction=0.2, epochs=4, batch_size=16, num_workers=0)  # fmt: skip
    assert result["top1"] == 1.0 and result["augment"] is True
    # One backbone pass over the 48 fitting images per epoch (batches of 16), no more.
    assert seen == [16, 16, 16] * 4 and result["n_train"] == 48 and result["n_val"] == 12


def test_probe_on_one_class_says_top1_means_nothing(capsys):
    train_f, _ = separable(40, 2, 4, seed=0)
    test_f, test_y = separable(10, 2, 4, seed=1)
    result = run_probe(train_f, torch.zeros(40, dtype=torch.long), test_f, test_y,
                       class_names=["cat", "dog"], epochs=30)  # fmt: skip
    assert result["top1"] == 0.5 and result["classes"] == ["cat", "dog"]
    assert len(result["warnings"]) == 2  # one class; dog never trained on
    assert result["warnings"][0].startswith("the training split has one class (cat)")
    err = [e for e in capsys.readouterr().err.splitlines() if e.startswith("selfsup: warning:")]
    assert err == [f"selfsup: warning: {w}" for w in result["warnings"]]
    two_classes = train_f[:, 0].gt(1).long()
    assert run_probe(train_f, two_classes, test_f, test_y, epochs=1)["warnings"] == []


def test_augmented_probe_reads_only_the_images_kept_after_unreadable_ones(tmp_path, capsys):
    from PIL import Image
    from torchvision.transforms import v2

    from selfsup.checkpoints import LoadedBackbone
    from selfsup.data.datasets import open_dataset
    from selfsup.eval.features import labelled_features
    from selfsup.eval.probe import SeededViews, run_probe_augmented

    colours = {"blue": (20, 20, 220), "red": (220, 20, 20)}
    for split, n in (("train", 20), ("test", 6)):
        for i in range(n):
            cls = ("blue", "red")[i % 2]
            (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), colours[cls]).save(tmp_path / split / cls / f"{i:02d}.png")
    broken = [tmp_path / "train" / "blue" / "02.png", tmp_path / "train" / "red" / "07.png"]
    for f in broken:
        f.write_bytes(b"")
    loaded = LoadedBackbone(ChannelMeans(), {"image_size": 8, "mean": [0.5] * 3,
                            "std": [0.25] * 3, "loaded": "student", "pool": "avg"}, "x.ckpt")  # fmt: skip
    train_f, train_y, test_f, test_y, classes = labelled_features(
        loaded, str(tmp_path), "the linear probe", num_workers=0
    )
    assert len(train_f) == 18 and classes == ["blue", "red"]

    class Reads(torch.utils.data.Dataset):
        def __init__(self, dataset):
            self.dataset, self.read = dataset, set()

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, index):
            self.read.add(index)
            return self.dataset[index]

    train = open_dataset(str(tmp_path), "train")
    reads = Reads(train)
    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.RandomResizedCrop(8),
                            v2.Normalize([0.5] * 3, [0.25] * 3)])  # as the eval view  # fmt: skip
    views = SeededViews(reads, transform, seed=0)
    result = run_probe_augmented(loaded.backbone, views, train_f, train_y, test_f, test_y,
                                 classes, val_fraction=0.2, epochs=3, batch_size=8,
                                 num_workers=0)  # fmt: skip
    lost = {train.files.index(f) for f in broken}
    # Every fitting image (kept, less validation), never a broken one or its stand-in.
    assert not reads.read & lost and len(reads.read) == result["n_train"]
    assert result["n_train"] + result["n_val"] == 18 and result["top1"] == 1.0
    assert result["skipped_images"] == [str(f) for f in broken]
    assert sum("2 of 20 train images" in w for w in result["warnings"]) == 1
    # Features without the notes that say which images they are: refused, not misaligned.
    with pytest.raises(ValueError, match="18 training features for 20 training views"):
        run_probe_augmented(loaded.backbone, views, train_f, train_y, test_f, test_y,
                            list(classes), epochs=1, num_workers=0)  # fmt: skip
