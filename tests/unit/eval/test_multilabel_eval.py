"""The evaluators on multi-label findings and groups, against naive references: K logistic
regressions fitted one by one, a kNN vote written as a loop, scikit-learn's AUROC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from selfsup.eval.label_curve import curve_rows
from selfsup.eval.linear_grid import LinearGrid, train_linear_grid
from selfsup.eval.probe import run_probe
from selfsup.eval.splits import group_split
from selfsup.knn import knn_scores

NAMES = ["effusion", "nodule", "cardiomegaly"]


def findings(n: int, seed: int, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and three findings, each a noisy linear rule of the features (so they
    overlap: an image can have none, one or several)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    rules = torch.tensor([[2.0, 0, 0, 1, 0, 0], [0, 2.0, 0, -1, 0, 0], [1.0, 1.0, 2.0, 0, 0, 0]])
    logits = x @ rules[:, :dim].T + 0.8 * torch.randn(n, 3, generator=g)
    return x, (logits > 0.3).long()


def naive_logistic(x, y, w0, b0, lr, wd, epochs, batch_size, seed):
    """One logistic regression with torch's own SGD (momentum 0.9) and cosine schedule,
    on the batches ``train_linear_grid`` draws for ``seed``."""
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.SGD([w, b], lr=lr, momentum=0.9, weight_decay=wd)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.binary_cross_entropy_with_logits(x[idx] @ w + b, y[idx].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return w.detach(), b.detach()


def test_multilabel_grid_heads_equal_logistic_regressions_fitted_one_by_one():
    x, y = findings(100, seed=0)
    lrs, wds, epochs, bs = (0.05, 0.5), (0.0, 1e-2), 3, 32
    heads, grid = train_linear_grid(x, y, 3, lrs, wds, epochs=epochs, batch_size=bs, seed=7)
    torch.manual_seed(7)
    init = LinearGrid(len(grid), 6, 3)
    for h, hp in enumerate(grid):
        for k in range(3):
            w, b = naive_logistic(x, y[:, k], init.weight[h, :, k].detach(),
                                  init.bias[h, 0, k].detach(), hp["lr"], hp["weight_decay"],
                                  epochs, bs, seed=7)  # fmt: skip
            assert torch.allclose(heads.weight[h, :, k], w, atol=1e-5), (hp, k)
            assert torch.allclose(heads.bias[h, 0, k], b, atol=1e-5), (hp, k)


def test_multilabel_probe_picks_and_reports_as_the_naive_reference():
    train_f, train_y = findings(160, seed=1)
    test_f, test_y = findings(80, seed=2)
    lrs, wds, epochs, bs, seed = (0.003, 0.3), (0.0, 1e-2), 4, 32, 5
    result = run_probe(train_f, train_y, test_f, test_y, NAMES, val_fraction=0.25,
                       epochs=epochs, batch_size=bs, learning_rates=lrs, weight_decays=wds,
                       seed=seed)  # fmt: skip
    # Independently: the same split, standardisation and initial weights; every finding
    # of every grid point fitted alone; validation macro AUROC and test AUROC by sklearn.
    fit, val = group_split(train_y.numpy(), None, 0.25, seed)
    mean, std = train_f[fit].mean(0), train_f[fit].std(0)
    fx, vx, tx = [(f - mean) / std for f in (train_f[fit], train_f[val], test_f)]
    torch.manual_seed(seed)
    init = LinearGrid(4, 6, 3)
    grid = [(lr, wd) for lr in lrs for wd in wds]
    val_macro, test_scores = [], []
    for h, (lr, wd) in enumerate(grid):
        cols = [naive_logistic(fx, train_y[fit][:, k], init.weight[h, :, k].detach(),
                               init.bias[h, 0, k].detach(), lr, wd, epochs, bs, seed)
                for k in range(3)]  # fmt: skip
        val_s = torch.stack([vx @ w + b for w, b in cols], 1)
        val_macro.append(roc_auc_score(train_y[val], val_s, average="macro"))
        test_scores.append(torch.stack([tx @ w + b for w, b in cols], 1))
    best = int(np.argmax(val_macro))
    assert (result["lr"], result["weight_decay"]) == grid[best]
    assert result["val_macro_auroc"] == pytest.approx(val_macro[best], abs=1e-4)
    assert result["grid_val_macro_auroc"] == pytest.approx(val_macro, abs=1e-4)
    for k, name in enumerate(NAMES):
        expected = roc_auc_score(test_y[:, k], test_scores[best][:, k])
        assert result["auroc"][name] == pytest.approx(expected, abs=1e-4)
    assert result["macro_auroc"] == pytest.approx(
        roc_auc_score(test_y, test_scores[best], average="macro"), abs=1e-4
    )
    assert result["micro_auroc"] == pytest.approx(
        roc_auc_score(test_y, test_scores[best], average="micro"), abs=1e-4
    )
    assert result["headline"] == {"metric": "macro_auroc", "value": result["macro_auroc"]}
    assert result["macro_auroc"] > 0.8  # the findings are learnable
    prevalence = result["prevalence"]
    assert prevalence["test"]["nodule"] == pytest.approx(float(test_y[:, 1].float().mean()))
    assert prevalence["val"]["effusion"] == pytest.approx(float(train_y[val, 0].float().mean()))
    assert 0 <= result["calibration_error"] <= 1
    assert "top1" not in result


def naive_knn_shares(train, train_y, test, k, t):
    """Each finding's similarity-weighted vote share among the k nearest, as a loop."""
    out = []
    for q in test:
        sims = sorted(((float(F.cosine_similarity(q, x, 0)), y) for x, y in zip(train, train_y)),
                      key=lambda s: -s[0])[:k]  # fmt: skip
        weights = [math.exp(s / t) for s, _ in sims]
        out.append([sum(w * float(y[j]) for w, (_, y) in zip(weights, sims)) / sum(weights)
                    for j in range(train_y.shape[1])])  # fmt: skip
    return torch.tensor(out)


@pytest.mark.parametrize("k", [1, 7, 500])
def test_multilabel_knn_equals_a_naive_loop(k):
    train, train_y = findings(60, seed=3)
    test, _ = findings(25, seed=4)
    scores = knn_scores(train, train_y, test, 3, ks=(k,), temperature=0.1, chunk_size=7)[k]
    naive = naive_knn_shares(train, train_y, test, min(k, 60), 0.1)
    assert torch.allclose(scores, naive, atol=1e-5)
    single = knn_scores(train, train_y[:, 0], test, 2, ks=(k,), temperature=0.1)[k]
    assert torch.allclose(single[:, 1], naive[:, 0], atol=1e-5)  # a share, either way


def test_the_probe_keeps_patients_on_one_side_and_counts_them():
    rng = np.random.default_rng(0)
    patients = np.array([f"p{i:03d}" for i in rng.integers(0, 40, 200)])
    train_f, train_y = findings(200, seed=5)
    test_f, test_y = findings(60, seed=6)
    test_groups = np.array([f"q{i}" for i in range(60)])
    result = run_probe(train_f, train_y, test_f, test_y, NAMES, epochs=2,
                       groups=(patients, test_groups))  # fmt: skip
    fit, val = group_split(train_y.numpy(), patients, 0.1, 0)
    assert not set(patients[fit]) & set(patients[val])
    # Each patient counted once, on one side: the sides' counts add up to all patients.
    n = result["n_groups"]
    assert n["train"] + n["val"] == len(set(patients)) and n["test"] == 60
    assert (result["n_train"], result["n_val"]) == (len(fit), len(val))


def test_label_curve_rows_are_the_mean_and_std_over_seeds():
    train_f, train_y = findings(300, seed=7)
    test_f, test_y = findings(100, seed=8)
    result = run_probe(train_f, train_y, test_f, test_y, NAMES, epochs=3,
                       label_fractions=(0.05, 0.3, 1.0), label_seeds=3)  # fmt: skip
    runs, rows = result["runs"], result["label_curve"]
    assert [r["fraction"] for r in rows] == [0.05, 0.3, 1.0] and len(runs) == 9
    for row in rows:
        values = [r["macro_auroc"] for r in runs if r["label_fraction"] == row["fraction"]]
        assert row["metric"] == "macro_auroc" and row["n_seeds"] == 3
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
    for seed in (0, 1, 2):  # nested sizes per seed, all of the fit split at 1.0
        sizes = [r["n_labelled"] for r in runs if r["label_seed"] == seed]
        assert sizes[0] < sizes[1] < sizes[2] == result["n_train"]
    assert result["headline"]["value"] == rows[-1]["mean"]
    assert curve_rows(runs) == rows


def test_probe_refuses_label_fractions_with_augmentation():
    from selfsup.errors import ConfigError
    from selfsup.eval.probe import check_probe_options

    with pytest.raises(ConfigError, match="drop one of them"):
        check_probe_options(0.1, True, [0.1, 1.0])
    with pytest.raises(ConfigError, match="val_fraction"):
        check_probe_options(1.0, False, None)


def test_label_fractions_out_of_range_are_one_line_before_any_work(tmp_path, capsys):
    from selfsup.cli import main

    for extra in (["--label_fraction", "[0,0.5]"], ["--label_fraction", "[1.5]"],
                  ["--label_fraction", "[0.1]", "--label_seeds", "0"]):  # fmt: skip
        code = main(
            ["probe", "--ckpt", str(tmp_path / "missing.ckpt"), "--data.path", "x.npz", *extra]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "fractions in (0, 1]" in err[0], err
