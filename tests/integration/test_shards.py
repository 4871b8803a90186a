"""`selfsup data pack`: shards read back with the source's pixels, labels, groups, masks and
spacing; evaluators give the same figures on shards as on the source; an interrupted pack
is finished by running it again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from conftest import random_simclr_checkpoint
from selfsup.cli import main
from selfsup.data.datasets import open_dataset
from selfsup.data.pixels import Reading


def pack(capsys, *args: str) -> dict:
    assert main(["data", "pack", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_an_npz_packs_to_the_same_images_labels_and_groups(tmp_path, capsys):
    rng = np.random.default_rng(0)
    source = tmp_path / "set.npz"
    np.savez(source, x_train=rng.integers(0, 255, (24, 20, 20, 3), dtype=np.uint8),
             y_train=rng.integers(0, 3, 24), x_test=rng.integers(0, 255, (8, 20, 20, 3), dtype=np.uint8),
             y_test=rng.integers(0, 3, 8), classes=np.array(["a", "b", "c"]),
             groups_train=np.array([f"p{i // 3}" for i in range(24)]))  # fmt: skip
    meta = pack(capsys, "--data.path", str(source), "--out", str(tmp_path / "shards"),
                "--workers", "2")  # fmt: skip
    assert meta["splits"]["train"]["samples"] == 24 and meta["classes"] == ["a", "b", "c"]
    for split in ("train", "test"):
        original = open_dataset(str(source), split)
        shards = open_dataset(str(tmp_path / "shards"), split)
        assert len(shards) == len(original) and shards.classes == original.classes
        assert np.array_equal(shards.targets, original.targets)
        for i in range(len(original)):  # in order, with two writers
            assert torch.equal(shards[i][0], original[i][0]) and shards[i][1] == original[i][1]
    assert list(open_dataset(str(tmp_path / "shards"), "train").groups[:4]) == ["p0"] * 3 + ["p1"]


def test_a_dicom_tree_packs_its_windowed_16_bit_pixels(tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "train" / "ct").mkdir(parents=True)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for i in range(3):
        ct.SOPInstanceUID = pydicom.uid.generate_uid()
        ct.save_as(tree / "train" / "ct" / f"{i}.dcm")
    (tree / "train" / "ct" / "broken.dcm").write_bytes(b"DICM" * 10)
    meta = pack(capsys, "--data.path", str(tree), "--out", str(tmp_path / "shards"),
                "--data.window", "lung", "--max_side", "64")  # fmt: skip
    assert meta["splits"]["train"]["samples"] == 3
    assert [f.endswith("broken.dcm") for f in meta["splits"]["train"]["skipped"]] == [True]
    original = open_dataset(str(tree), "train", reading=Reading(window="lung"))
    shards = open_dataset(str(tmp_path / "shards"), "train")
    image = shards[0][0]
    assert image.shape == (1, 64, 64)  # 128 px capped at 64 by area averaging
    expected = torch.nn.functional.interpolate(original[0][0][None].float(), size=(64, 64),
                                               mode="area")[0]  # fmt: skip
    assert torch.allclose(image, expected, atol=1 / 65535 + 1e-6)  # stored at 16 bits


def test_segment_on_shards_gives_the_figures_of_the_source(seg_npz, tmp_path, capsys):
    pack(capsys, "--data.path", str(seg_npz), "--out", str(tmp_path / "shards"))
    ckpt = random_simclr_checkpoint(tmp_path / "simclr.ckpt", in_chans=1)
    results = []
    for data in (seg_npz, tmp_path / "shards"):
        assert main(["segment", "--ckpt", str(ckpt), "--data.path", str(data), "--epochs", "2",
                     "--data.num_workers", "0", "--out", str(tmp_path / data.name)]) == 0  # fmt: skip
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    source, shards = results
    assert shards["per_class"] == source["per_class"]  # spacing, groups and masks came along
    assert shards["units"]["distance"] == "mm" and shards["n_groups"] == source["n_groups"]


def test_an_interrupted_pack_is_finished_by_running_it_again(tiny_npz, tmp_path, capsys):
    out = tmp_path / "shards"
    pack(capsys, "--data.path", str(tiny_npz), "--out", str(out))
    shutil.move(out / "test", out / "test.partial")  # as if stopped before the rename
    (out / "test.partial" / "selfsup_index.npz").unlink()
    train_files = sorted(p.name for p in (out / "train").iterdir())
    meta = pack(capsys, "--data.path", str(tiny_npz), "--out", str(out))
    assert meta["splits"]["test"]["samples"] == 48 and not (out / "test.partial").exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == train_files  # not rewritten
    assert len(open_dataset(str(out), "test")) == 48


@pytest.mark.parametrize("bad", [["--max_side", "4"], []])
def test_pack_options_that_cannot_work_are_one_line(tmp_path, capsys, bad):
    argv = ["data", "pack", "--out", str(tmp_path / "x"), *bad]
    if bad:
        argv += ["--data.path", "patterns"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture
def s3(monkeypatch):
    """A local S3 endpoint (moto's server) that boto3 and litdata reach through AWS_ENDPOINT_URL."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    from conftest import free_port

    server = server_module.ThreadedMotoServer(
        ip_address="127.0.0.1", port=free_port(), verbose=False
    )
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    # The local endpoint is plain http, which litdata's obstore client refuses unless told.
    import litdata.streaming.downloader as downloader

    monkeypatch.setattr(
        downloader,
        "_OBSTORE_CLIENT_OPTIONS",
        {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": "true"},
    )
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="packs")
    yield client
    server.stop()


def test_a_pack_in_an_object_store_reads_as_the_local_pack_with_a_bounded_cache(
    tiny_npz, tmp_path, capsys, s3
):
    local = tmp_path / "shards"
    pack(capsys, "--data.path", str(tiny_npz), "--out", str(local), "--chunk_bytes", "40KB")
    chunks = sorted(local.glob("train/*.bin"))
    assert len(chunks) > 4  # so that a small cache must let chunks go
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "packs", f"tiny/{path.relative_to(local)}")
    cache = tmp_path / "cache"
    reading = Reading(shard_cache=str(cache), shard_cache_size="100KB")
    for split in ("train", "test"):
        remote, here = (
            open_dataset("s3://packs/tiny", split, reading=reading),
            open_dataset(str(local), split),
        )
        assert len(remote) == len(here) and np.array_equal(remote.targets, here.targets)
        for i in range(len(here)):
            assert torch.equal(remote[i][0], here[i][0]) and remote[i][1] == here[i][1]
    cached = [f for f in cache.rglob("*.bin")]
    held, packed = sum(f.stat().st_size for f in cached), sum(c.stat().st_size for c in chunks)
    assert held <= 100_000 + max(c.stat().st_size for c in chunks) < packed, (
        len(cached),
        held,
        packed,
    )
    # Pretraining streams it too (a DataLoader worker opens its own stream).
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "configs/quickstart.yaml", "--data.path", "s3://packs/tiny",
                 "--data.shard_cache", str(cache), "--trainer.max_steps", "2", "--data.batch_size", "16",
                 "--data.num_workers", "1", "--knn_monitor.every_n_epochs", "0", "--pictures.every_n_epochs", "0",
                 "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run)]) == 0  # fmt: skip
    assert main(["knn", "--ckpt", str(run), "--data.path", "s3://packs/tiny", "--data.shard_cache",
                 str(cache)]) == 0  # fmt: skip
    # A URL that holds no pack is one line.
    assert main(["knn", "--ckpt", str(run), "--data.path", "s3://packs/nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Cannot read s3://packs/nothing/selfsup.json" in err
