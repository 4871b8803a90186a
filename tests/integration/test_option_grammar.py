"""One option grammar for every command: a pretraining config's ``data:`` block serves an
evaluator unchanged, ``--data.window`` means the same to ``pretrain`` and ``knn``, and
another grammar's spelling is one line naming this one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from conftest import REPO
from selfsup.cli import main

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
QUICK = ["--data.num_workers", "0", "--trainer.precision", "32", "--trainer.max_steps", "2",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--knn_monitor.every_n_epochs", "0", "--model.init_args.projection_hidden_dim", "64"]  # fmt: skip


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_pretraining_data_block_serves_the_probe_unchanged(tiny_npz, tmp_path, capsys):
    pretraining = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    pretraining["data"].update(path=str(tiny_npz), batch_size=16)
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(pretraining))
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(config), "--trainer.default_root_dir", str(run),
                 *QUICK]) == 0  # fmt: skip
    capsys.readouterr()

    probe = tmp_path / "probe.yaml"  # the data block as it stands, view pipeline and all
    probe.write_text(yaml.safe_dump({"epochs": 3, "data": pretraining["data"]}))
    assert main(["probe", "--config", str(probe), "--ckpt", str(run), "--cache", "false"]) == 0
    result = last_json(capsys)
    assert result["task"] == "probe" and result["n_test"] == 48

    block = tmp_path / "data.yaml"  # the block alone, as --data FILE
    block.write_text(yaml.safe_dump(pretraining["data"]))
    assert (
        main(["knn", "--ckpt", str(run), "--data", str(block), "--k", "[5]", "--cache", "false"])
        == 0
    )
    assert last_json(capsys)["n_test"] == 48

    with pytest.raises(SystemExit) as done:
        main(["probe", "--config", str(probe), "--ckpt", "C", "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)["data"]
    assert printed["path"] == str(tiny_npz) and printed["channels"] == 1


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml") if "model" in yaml.safe_load(p.read_text())))  # fmt: skip
def test_every_pretraining_configs_data_block_parses_for_the_evaluators(config, tmp_path, capsys):
    block = yaml.safe_load((REPO / config).read_text()).get("data") or {}
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(block))
    for command in ("knn", "probe", "finetune", "embed"):
        with pytest.raises(SystemExit) as done:
            main([command, "--ckpt", "C", "--data", str(data), "--print_config"])
        assert done.value.code == 0, capsys.readouterr().err
        assert yaml.safe_load(capsys.readouterr().out)["data"]["path"] == block.get("path")


@pytest.fixture(scope="module")
def ct_tree(tmp_path_factory) -> Path:
    """A labelled tree of CT slices (train/<class>/, test/<class>/): pydicom's CT_small
    with its Hounsfield values shifted per class and per image."""
    root = tmp_path_factory.mktemp("ct")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for label, shift in (("soft", 0), ("dense", 600)):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                ds = pydicom.dcmread(FILES / "CT_small.dcm")
                pixels = ds.pixel_array.astype(np.int32) + shift + int(rng.integers(-50, 50))
                ds.PixelData = np.clip(pixels, -2000, 4000).astype(ds.pixel_array.dtype).tobytes()
                ds.save_as(root / split / label / f"{i}.dcm")
    return root


def test_the_lung_window_is_one_option_for_pretrain_and_knn(ct_tree, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["pretrain", "--config", str(REPO / "configs/quickstart.yaml"), "--data.path",
            str(ct_tree / "train"), "--data.window", "lung", "--data.batch_size", "8",
            "--trainer.default_root_dir", str(run), *QUICK]  # fmt: skip
    assert main(argv) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["window"] == "lung"
    capsys.readouterr()

    cache = tmp_path / "cache"
    monkeypatch.setenv("SELFSUP_CACHE", str(cache))
    for window in ("lung", "mediastinum"):
        assert main(["knn", "--ckpt", str(run), "--data.path", str(ct_tree), "--data.window", window,
                     "--k", "[3]", "--data.num_workers", "0", "--out", str(tmp_path / window)]) == 0  # fmt: skip
        assert last_json(capsys)["n_test"] == 8
    # The window reaches the reader: each one is its own cached train and test features.
    assert len(list((cache / "features").iterdir())) == 4
    shutil.rmtree(cache)


@pytest.mark.parametrize(
    "argv,says",
    [
        (["knn", "--ckpt", "C", "--data", "x.npz"], "--data.path x.npz"),
        (["probe", "--ckpt", "C", "--data.path", "x.npz", "--window", "lung"], "--data.window"),
        (["knn", "--ckpt", "C", "--data.path", "x.npz", "--batch-size", "8"], "--data.batch_size"),
        (["knn", "--ckpt", "C", "--data.path", "x.npz", "--no-cache"], "--cache false"),
        (["knn", "--ckpt", "C", "--data.path", "x.npz", "--k", "20", "200"], "--k [A,B]"),
        (["probe", "--ckpt", "C", "--data.path", "x.npz", "--augment"], "--augment true"),
        (["probe", "--ckpt", "C", "--data.path", "x.npz", "--epoch", "3"], "--epochs?"),
        (["pretrain", "--config", str(REPO / "configs/quickstart.yaml"), "--trainer.max_epoch", "3"], "--trainer.max_epochs"),
        (["data", "inspect", "--data", "x.npz"], "--data.path x.npz"),
        (["pretrain", "--config", str(REPO / "configs/quickstart.yaml"), "--window", "lung"], "--data.window"),
        (["launch", "pretrain", "--gpus-per-node", "2", "--", "--config", "c.yaml"], "--gpus_per_node"),
        (["launch", "pretrain", "--config", str(REPO / "configs/quickstart.yaml")], "goes after --"),
    ],
)  # fmt: skip
def test_another_grammars_spelling_is_one_line_naming_this_one(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err


def test_a_list_option_takes_one_bracketed_value_or_appends(capsys):
    for extra, k in ((["--k", "[5,50]"], [5, 50]), (["--k+", "500"], [20, 200, 500])):
        with pytest.raises(SystemExit) as done:
            main(["knn", "--ckpt", "C", "--data.path", "x.npz", *extra, "--print_config"])
        assert done.value.code == 0
        assert yaml.safe_load(capsys.readouterr().out)["k"] == k
