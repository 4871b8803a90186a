"""Evaluation features in bf16 autocast where the hardware runs bf16 natively: within a
stated tolerance of fp32's, cached apart from them, said in the JSON."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import random_simclr_checkpoint
from selfsup.cli import main
from selfsup.precision import eval_precision


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_simclr_checkpoint(tmp_path_factory.mktemp("ckpt") / "simclr.ckpt")


def test_fp32_is_kept_where_asked_or_where_bf16_is_not_native(monkeypatch):
    assert eval_precision("cpu", "32") == "32"
    monkeypatch.setattr("selfsup.precision.cpu_has_native_bf16", lambda: False)
    assert eval_precision("cpu", "auto") == "32"
    monkeypatch.setattr("selfsup.precision.cpu_has_native_bf16", lambda: True)
    assert eval_precision("cpu", "auto") == "bf16"


def test_bf16_features_stay_within_tolerance_of_fp32(ckpt, tiny_npz, tmp_path, capsys, monkeypatch):
    """Tolerance: features with cosine similarity above 0.999 to fp32's; kNN top-1 within
    two of the 48 test images."""
    monkeypatch.setattr("selfsup.precision.cpu_has_native_bf16", lambda: True)
    from selfsup.checkpoints import load_backbone
    from selfsup.data.datasets import open_dataset
    from selfsup.eval.features import split_features

    test = open_dataset(str(tiny_npz), "test")
    figures = {}
    for precision in ("auto", "32"):
        loaded = load_backbone(ckpt)
        loaded.meta["eval_precision"] = precision
        figures[precision] = split_features(loaded, str(tiny_npz), "test", test, 16, 0)
    (bf16, _, _, hit_bf16), (fp32, _, _, hit_fp32) = figures["auto"], figures["32"]
    assert not hit_bf16 and not hit_fp32  # cached apart: one precision never reads the other's
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32)
    assert float(cosine.min()) > 0.999 and not torch.equal(bf16, fp32)
    results = {}
    for precision in ("auto", "32"):
        argv = ["knn", "--ckpt", str(ckpt), "--data.path", str(tiny_npz), "--feature_precision",
                precision, "--data.num_workers", "0", "--out", str(tmp_path / precision)]  # fmt: skip
        assert main(argv) == 0
        results[precision] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["auto"]["feature_precision"] == "bf16"
    assert results["32"]["feature_precision"] == "32"
    assert abs(results["auto"]["top1"] - results["32"]["top1"]) <= 2 / 48 + 1e-9
