"""Multi-label data: 0/1 findings from npz files (selfsup's and MedMNIST's layouts) and
manifests (a ``labels`` column or ``label_columns``), patient groups, what ``selfsup data
inspect`` says of them, and the kNN monitor's macro AUROC on them."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from selfsup.cli import main
from selfsup.data.datasets import open_dataset
from selfsup.data.module import PretrainDataModule
from selfsup.data.pixels import DataError, Reading
from selfsup.data.readers.arrays import ArrayDataset
from selfsup.data.readers.volumes import VolumeSliceDataset
from selfsup.train.knn_monitor import KNNMonitor

RNG = np.random.default_rng(0)
X6 = RNG.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
Y6 = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]])


def npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


# -- npz ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, bool, np.float32])
def test_npz_findings_read_back_as_the_array_with_their_names(tmp_path, dtype):
    path = npz(tmp_path / "cxr.npz", x_train=X6, y_train=Y6.astype(dtype), x_test=X6[:2],
               y_test=Y6[:2].astype(dtype), classes=np.array(["effusion", "nodule", "mass"]))  # fmt: skip
    ds = open_dataset(path, "train")
    assert ds.multilabel and ds.targets.dtype == np.int64 and np.array_equal(ds.targets, Y6)
    assert ds.classes == ["effusion", "nodule", "mass"] and ds.groups is None
    image, label = ds[1]
    assert label.dtype == torch.int64 and label.tolist() == [0, 1, 1]
    assert torch.equal(image, torch.from_numpy(X6[1]).permute(2, 0, 1))
    images, labels = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and labels.dtype == torch.int64
    assert labels.tolist() == Y6[:4].tolist()
    assert open_dataset(path, "test").targets.tolist() == Y6[:2].tolist()


def test_findings_without_names_are_numbered_and_one_column_stays_single_label(tmp_path):
    ds = open_dataset(npz(tmp_path / "a.npz", x_train=X6, y_train=Y6), "train")
    assert ds.classes == ["0", "1", "2"] and ds.multilabel
    single = open_dataset(npz(tmp_path / "b.npz", x_train=X6, y_train=Y6[:, :1]), "train")
    assert not single.multilabel and single.targets.tolist() == Y6[:, 0].tolist()
    assert single[0][1] == 1 and isinstance(single[0][1], int)


def test_medmnist_multilabel_layout_and_the_packages_names(tmp_path, monkeypatch):
    labels = {s: RNG.integers(0, 2, (n, 14)).astype(np.uint8)
              for s, n in (("train", 6), ("val", 2), ("test", 3))}  # fmt: skip
    npz(tmp_path / "chestmnist.npz", **{f"{s}_labels": y for s, y in labels.items()},
        **{f"{s}_images": np.zeros((len(y), 28, 28), np.uint8) for s, y in labels.items()})  # fmt: skip
    names = [f"finding{i}" for i in range(14)]
    fake = types.SimpleNamespace(
        INFO={"chestmnist": {"label": {str(i): n for i, n in enumerate(names)}}}
    )
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    test = open_dataset("medmnist:chestmnist", "test", root=str(tmp_path))
    assert test.classes == names and np.array_equal(test.targets, labels["test"])
    assert test[2][1].tolist() == labels["test"][2].tolist()
    monkeypatch.setitem(sys.modules, "medmnist", None)  # not installed: numbered findings
    train = open_dataset("medmnist:chestmnist", "train", root=str(tmp_path))
    assert train.classes == [str(i) for i in range(14)] and train.targets.shape == (6, 14)


BAD_FINDINGS = [
    (dict(y_train=np.where(Y6 == 1, -1, 0)), ["values other than 0 and 1", "-1", "uncertain", "0 or 1 first"]),
    (dict(y_train=Y6 * 2), ["values other than 0 and 1", "2"]),
    (dict(y_train=Y6 * 0.5), ["values other than 0 and 1", "0.5"]),
    (dict(y_train=Y6, classes=np.array(["a", "b"])), ["2 class names for 3 finding columns", "one name per column"]),
    (dict(y_train=Y6, x_test=X6[:2], y_test=Y6[:2, :2]),
     ["y_train has 3 finding columns", "y_test has 2 finding columns", "same findings"]),
    (dict(y_train=Y6, x_test=X6[:2], y_test=np.array([0, 1])), ["y_test has one label per image"]),
    (dict(y_train=Y6[:5]), ["5 labels for 6 images"]),
    (dict(y_train=Y6, groups_train=np.array(["p1", "p2"])), ["groups_train has shape (2,) for 6 images", "one patient/study id per image"]),
    (dict(y_train=Y6, groups_train=np.ones(6)), ["groups_train has dtype float64", "str or int"]),
]  # fmt: skip


@pytest.mark.parametrize("arrays,words", BAD_FINDINGS)
def test_bad_findings_and_groups_are_one_line_naming_the_fix(tmp_path, arrays, words):
    path = npz(tmp_path / "bad.npz", x_train=X6, **arrays)
    with pytest.raises(DataError) as error:
        open_dataset(path, "train")
    message = str(error.value)
    assert "\n" not in message and path in message
    for word in words:
        assert word in message, message


def test_the_cli_refuses_uncertain_findings_in_one_line_with_status_2(tmp_path, capsys):
    from selfsup.cli import main

    path = npz(tmp_path / "chexpert.npz", x_train=X6, y_train=np.where(Y6 == 1, -1, Y6))
    assert main(["data", "inspect", "--data.path", path, "--out", str(tmp_path / "p.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "values other than 0 and 1" in lines[0]


def test_npz_groups_become_str_ids(tmp_path):
    path = npz(tmp_path / "g.npz", x_train=X6, y_train=Y6, groups_train=np.array([7, 7, 8, 9, 9, 9]),
               x_test=X6[:2], groups_test=np.array([b"p1", b"p2"]))  # fmt: skip
    train = open_dataset(path, "train")
    assert (
        train.groups.tolist() == ["7", "7", "8", "9", "9", "9"] and train.groups.dtype.kind == "U"
    )
    assert open_dataset(path, "test").groups.tolist() == ["p1", "p2"]  # unlabelled, grouped


def test_array_and_volume_datasets_take_findings(tmp_path):
    ds = ArrayDataset(X6, Y6.astype(bool), ["a", "b", "c"], groups=np.arange(6))
    assert ds.multilabel and ds[3][1].tolist() == [1, 1, 0] and ds.groups.tolist()[5] == "5"
    with pytest.raises(DataError, match="2 class names for 3 finding columns"):
        ArrayDataset(X6, Y6, ["a", "b"])
    files = []
    for i in range(2):
        files.append(tmp_path / f"v{i}.nii.gz")
        nib.Nifti1Image(RNG.normal(0, 1, (6, 6, 4)).astype(np.float32), np.eye(4)).to_filename(
            files[-1]
        )
    vol = VolumeSliceDataset(files, Reading(slices_per_volume=2), labels=Y6[:2])
    assert vol.multilabel and vol.classes == ["0", "1", "2"] and vol.groups is None
    assert vol.targets.tolist() == [Y6[0].tolist()] * 2 + [Y6[1].tolist()] * 2
    assert vol[3][1].tolist() == Y6[1].tolist() and vol.read_item(3)[1].dtype == torch.int64


# -- manifests -------------------------------------------------------------------------------


@pytest.fixture
def pngs(tmp_path) -> Path:
    for i in range(8):
        Image.fromarray(RNG.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def table(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def findings_by_csv(path: str, split: str) -> tuple[list[str], np.ndarray]:
    """The findings and matrix of ``split``, read with the csv module alone."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [[n.strip() for n in r["labels"].split("|")] for r in rows]
    names = sorted({n for c in cells for n in c if n.lower() != "none"})
    chosen = [c for c, r in zip(cells, rows, strict=True) if r["split"] == split]
    return names, np.array([[int(n in c) for n in names] for c in chosen])


LABELS = [
    "path,labels,group,split",
    "0.png,effusion|nodule,p1,train", "1.png,none,p1,train", "2.png, nodule ,p2,train",
    "3.png,NONE,p3,train", "4.png,mass,p4,test", "5.png,effusion | mass,p5,test",
    "6.png,cardiomegaly,p6,val",
]  # fmt: skip


def test_a_labels_column_is_the_findings_of_every_split(pngs):
    path = table(pngs / "t.csv", LABELS)
    for split, n in (("train", 4), ("test", 2), ("val", 1)):
        ds = open_dataset(path, split)
        names, matrix = findings_by_csv(path, split)
        assert ds.classes == names == ["cardiomegaly", "effusion", "mass", "nodule"]
        assert ds.multilabel and ds.targets.shape == (n, 4) and np.array_equal(ds.targets, matrix)
    train = open_dataset(path, "train")
    assert train.targets[1].tolist() == [0, 0, 0, 0] and train.targets[2].tolist() == [0, 0, 0, 1]
    assert train.groups.tolist() == ["p1", "p1", "p2", "p3"] and train.rows.tolist() == [2, 3, 4, 5]
    assert train[0][1].tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (["path,labels", "0.png,a", "1.png,", "2.png,b", "3.png, | "],
         ["2 row(s) with an empty labels cell", "lines 3 (1.png), 5 (3.png)", "or none for an image without findings"]),
        (["path,labels", "0.png,a|none"], ["none beside findings", "line", "2 (a|none)"]),
        (["path,labels", "0.png,none"], ["names no finding"]),
        (["path,label,labels", "0.png,x,a"], ["both a label column", "labels column", "drop one"]),
    ],
)  # fmt: skip
def test_bad_labels_cells_are_refused_with_their_lines(pngs, rows, words):
    with pytest.raises(DataError) as error:
        open_dataset(table(pngs / "t.csv", rows), "train")
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


COLUMNS = ["path,effusion,nodule,site,split", "0.png,1,0,a,train", "1.png,0.0,1.0,a,train",
           "2.png,true,FALSE,b,train", "3.png,0,0,b,test"]  # fmt: skip


def test_label_columns_are_0_1_findings_in_the_given_order(pngs):
    path = table(pngs / "t.csv", COLUMNS)
    ds = open_dataset(path, "train", reading=Reading(label_columns=("nodule", "effusion")))
    assert ds.classes == ["nodule", "effusion"] and ds.multilabel
    assert ds.targets.tolist() == [[0, 1], [1, 0], [0, 1]]
    assert ds[1][1].tolist() == [1, 0]
    assert open_dataset(path, "train").targets is None  # without label_columns: unlabelled


@pytest.mark.parametrize(
    ("rows", "columns", "words"),
    [
        (COLUMNS, ("effusion", "mass"), ["no column mass", "path, effusion, nodule, site, split"]),
        (["path,a,b", "0.png,1,0", "1.png,-1,0", "2.png,0,uncertain", "3.png,1,"], ("a", "b"),
         ["3 row(s) with a label column value other than 0 or 1",
          "lines 3 (a=-1), 4 (b=uncertain), 5 (b=empty)", "-1 for 'uncertain', to 0 or 1 first"]),
        (["path,labels,a", "0.png,x,1"], ("a",), ["has a labels column and label_columns", "drop"]),
    ],
)  # fmt: skip
def test_bad_label_columns_are_one_line(pngs, rows, columns, words):
    with pytest.raises(DataError) as error:
        open_dataset(table(pngs / "t.csv", rows), "train", reading=Reading(label_columns=columns))
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_label_columns_are_checked_and_apply_to_manifests_only(tmp_path):
    assert Reading(label_columns=["a ", "b"]).label_columns == ("a", "b")
    assert Reading(label_columns="a").label_columns == ("a",) and Reading().label_columns is None
    with pytest.raises(DataError, match="names a twice"):
        Reading(label_columns=("a", "b", "a"))
    with pytest.raises(DataError, match="non-empty column names"):
        Reading(label_columns=("a", " "))
    path = npz(tmp_path / "d.npz", x_train=X6, y_train=Y6)
    with pytest.raises(
        DataError, match=r"applies to manifests \(.csv, .tsv\) only.*drop label_columns"
    ):
        open_dataset(path, "train", reading=Reading(label_columns=("a",)))


def test_the_pretraining_data_module_passes_label_columns_on(pngs):
    path = table(pngs / "t.csv", COLUMNS)
    dm = PretrainDataModule(path, label_columns=["effusion", "nodule"], num_workers=0)
    assert dm.reading.label_columns == ("effusion", "nodule")
    assert dm.train_dataset.multilabel and dm.train_dataset.targets.tolist() == [
        [1, 0],
        [0, 1],
        [1, 0],
    ]


def test_data_inspect_shows_positives_per_finding_and_groups(pngs, capsys):
    path = table(pngs / "t.csv", LABELS)
    assert main(["data", "inspect", "--data.path", path, "--out", str(pngs / "p.png")]) == 0
    out, err = capsys.readouterr()
    info = json.loads(out.strip().splitlines()[-1])
    assert info["findings"] == {"cardiomegaly": {"positives": 0, "share": 0.0},
                                "effusion": {"positives": 1, "share": 0.25},
                                "mass": {"positives": 0, "share": 0.0},
                                "nodule": {"positives": 2, "share": 0.5}}  # fmt: skip
    assert info["groups"] == 3 and "labels" not in info and "findings" in err
    columns = table(pngs / "c.csv", COLUMNS)
    assert main(["data", "inspect", "--data.path", columns, "--out", str(pngs / "q.png"),
                 "--data.label_columns", "[effusion,nodule]"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["findings"]["effusion"] == {"positives": 2, "share": round(2 / 3, 4)}


# -- the kNN monitor --------------------------------------------------------------------------


class Tiny(pl.LightningModule):
    """A linear backbone that does not learn (lr 0): the features the monitor used stay known."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 6)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1).float() / 255)

    def training_step(self, batch, batch_idx):
        return self.extract_features(batch[0]).sum() * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Pair(pl.LightningDataModule):
    def __init__(self, train, test) -> None:
        super().__init__()
        self.train, self.test = train, test

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=8)

    def knn_datasets(self, max_train, max_test):
        return self.train, self.test


def naive_vote_shares(train_f, train_y, test_f, k, t):
    train_f = train_f / np.linalg.norm(train_f, axis=1, keepdims=True)
    test_f = test_f / np.linalg.norm(test_f, axis=1, keepdims=True)
    shares = []
    for q in test_f:
        sim = train_f @ q
        top = np.argsort(-sim)[:k]
        w = np.exp(sim[top] / t)
        shares.append((w[:, None] * train_y[top]).sum(0) / w.sum())
    return np.array(shares)


def assert_clear_of_ties(train_f, test_f, shares, test_y, k, margin=1e-4):
    """Another CPU's kernels or another batch size round the features differently; the figure
    must not depend on that: every query's k-th neighbour stands clear of its (k+1)-th, and no
    positive query's vote share lies within ``margin`` of a negative query's unless they are equal."""
    unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)  # noqa: E731
    sims = -np.sort(-(unit(test_f) @ unit(train_f).T), axis=1)
    assert (sims[:, k - 1] - sims[:, k]).min() > margin
    for j in range(test_y.shape[1]):
        pos, neg = shares[test_y[:, j] == 1, j], shares[test_y[:, j] == 0, j]
        gaps = np.abs(pos[:, None] - neg[None, :])
        assert ((gaps == 0) | (gaps > margin)).all(), f"finding {j}: near-tied vote shares"


def fit(tmp_path, train, test, monitor):
    torch.manual_seed(0)  # the features do not depend on which tests ran before in this process
    model = Tiny()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", callbacks=[monitor], logger=pl.loggers.CSVLogger(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=Pair(train, test))
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        logged = {
            k: float(v) for r in csv.DictReader(f) for k, v in r.items() if v and k != "epoch"
        }
    return model, trainer, logged


def test_the_knn_monitor_reports_macro_auroc_on_findings(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 2, (60, 4))
    y[40:, 3] = 0  # a finding with no positive query: left out of the mean
    train, test = ArrayDataset(x[:40], y[:40]), ArrayDataset(x[40:], y[40:])
    monitor = KNNMonitor(k=5, temperature=0.1)
    model, trainer, logged = fit(tmp_path, train, test, monitor)
    with torch.no_grad():
        feats = model.extract_features(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    shares = naive_vote_shares(feats[:40], y[:40], feats[40:], 5, 0.1)
    assert_clear_of_ties(feats[:40], feats[40:], shares, y[40:, :3], 5)
    expected = roc_auc_score(y[40:, :3], shares[:, :3], average="macro")
    assert monitor.multilabel and "val/knn_top1" not in logged
    assert logged["val/knn_macro_auroc"] == pytest.approx(expected, abs=1e-6)
    assert logged["val/knn_macro_auroc_random_init"] == pytest.approx(expected, abs=1e-6)
    assert float(trainer.callback_metrics["val/knn_macro_auroc"]) == pytest.approx(
        expected, abs=1e-6
    )
    assert f"kNN macro AUROC (k=5): {expected:.4f}" in capsys.readouterr().out
    assert monitor.state_dict() == {"baseline": monitor.baseline, "last": monitor.last}


def test_the_knn_monitor_keeps_top1_for_one_class_per_image(tmp_path, capsys):
    x = RNG.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    monitor = KNNMonitor(k=5, temperature=0.1)
    _, _, logged = fit(
        tmp_path, ArrayDataset(x[:20], y[:20]), ArrayDataset(x[20:], y[20:]), monitor
    )
    assert {"val/knn_top1", "val/knn_top1_random_init"} <= set(logged) and not monitor.multilabel
    assert not any("auroc" in k for k in logged)
    assert (
        f"kNN top-1 (k=5): {monitor.last:.4f}   random-init backbone: " in capsys.readouterr().out
    )
