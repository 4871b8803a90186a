"""Multi-label report and calibration error: equal to scikit-learn on the same scores, a
hand-computed ECE, ties, one-class findings, and torchmetrics doing the computing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from selfsup.errors import ConfigError
from selfsup.eval import multilabel
from selfsup.eval.multilabel import calibration_error, multilabel_report


def random_case(seed: int, n: int = 200, k: int = 5, ties: bool = False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < rng.uniform(0.05, 0.5, k)).astype(np.int64)
    scores = targets * rng.normal(1.0, 1.0, (n, k)) + rng.normal(0, 1.0, (n, k))
    if ties:  # few distinct values: many tied scores, within and across classes
        scores = np.round(scores)
    return scores, targets


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_equals_sklearn(seed, ties):
    scores, targets = random_case(seed, ties=ties)
    names = [f"f{i}" for i in range(targets.shape[1])]
    rep = multilabel_report(torch.from_numpy(scores), torch.from_numpy(targets), names)
    for i, name in enumerate(names):
        assert rep["auroc"][name] == pytest.approx(roc_auc_score(targets[:, i], scores[:, i]))
        expected_ap = average_precision_score(targets[:, i], scores[:, i])
        assert rep["average_precision"][name] == pytest.approx(expected_ap)
        assert rep["prevalence"][name] == pytest.approx(targets[:, i].mean())
    assert rep["macro_auroc"] == pytest.approx(roc_auc_score(targets, scores, average="macro"))
    assert rep["micro_auroc"] == pytest.approx(roc_auc_score(targets, scores, average="micro"))
    assert rep["mAP"] == pytest.approx(average_precision_score(targets, scores, average="macro"))
    assert rep["n_findings_averaged"] == rep["n_findings"] == len(names)
    assert rep["n_samples"] == len(scores)


def test_logits_and_probabilities_give_the_same_report():
    scores, targets = random_case(3)
    a = multilabel_report(scores, targets)
    b = multilabel_report(1 / (1 + np.exp(-scores)), targets)
    assert a["macro_auroc"] == pytest.approx(b["macro_auroc"])
    assert a["micro_auroc"] == pytest.approx(b["micro_auroc"])
    assert a["mAP"] == pytest.approx(b["mAP"])


def test_all_tied_scores_give_auroc_one_half():
    targets = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    rep = multilabel_report(np.full((4, 2), 0.3), targets)
    assert rep["auroc"] == {"0": pytest.approx(0.5), "1": pytest.approx(0.5)}
    assert rep["average_precision"]["0"] == pytest.approx(0.5)  # the prevalence


@pytest.mark.parametrize("fill", [0, 1])
def test_one_class_finding_is_none_and_left_out_of_macro(fill):
    scores, targets = random_case(4, k=4)
    targets[:, 2] = fill  # no positives (fill 0) or no negatives (fill 1)
    names = ["a", "b", "c", "d"]
    rep = multilabel_report(scores, targets, names)
    assert rep["auroc"]["c"] is None and rep["average_precision"]["c"] is None
    assert rep["prevalence"]["c"] == fill
    assert rep["n_findings_averaged"] == 3
    keep = [0, 1, 3]
    expected = roc_auc_score(targets[:, keep], scores[:, keep], average="macro")
    assert rep["macro_auroc"] == pytest.approx(expected)
    expected_map = average_precision_score(targets[:, keep], scores[:, keep], average="macro")
    assert rep["mAP"] == pytest.approx(expected_map)
    # micro pools every (sample, finding) pair, the one-class finding included
    assert rep["micro_auroc"] == pytest.approx(roc_auc_score(targets, scores, average="micro"))


def test_no_finding_with_both_classes_gives_none_averages():
    rep = multilabel_report(np.random.default_rng(0).random((5, 2)), np.zeros((5, 2), int))
    assert rep["macro_auroc"] is None and rep["mAP"] is None and rep["micro_auroc"] is None
    assert rep["n_findings_averaged"] == 0


def test_torchmetrics_computes_the_figures(monkeypatch):
    calls = []
    real_auroc, real_ap = multilabel.multilabel_auroc, multilabel.multilabel_average_precision

    def spy(fn, tag):
        def wrapped(*args, **kwargs):
            calls.append(tag)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(multilabel, "multilabel_auroc", spy(real_auroc, "auroc"))
    monkeypatch.setattr(multilabel, "multilabel_average_precision", spy(real_ap, "ap"))
    assert real_auroc.__module__.startswith("torchmetrics")
    assert real_ap.__module__.startswith("torchmetrics")
    multilabel_report(*random_case(5))
    assert calls.count("auroc") == 2 and calls.count("ap") == 1  # per finding + micro; AP


def test_bad_shapes_and_names_are_config_errors():
    with pytest.raises(ConfigError, match="must"):
        multilabel_report(np.zeros((4, 2)), np.zeros((4, 3), int))
    with pytest.raises(ConfigError, match="0/1"):
        multilabel_report(np.zeros((4, 2)), np.full((4, 2), 2))
    with pytest.raises(ConfigError, match="names"):
        multilabel_report(np.zeros((4, 2)), np.zeros((4, 2), int), ["a"])


def test_multiclass_ece_by_hand():
    # 15 bins of width 1/15. Confidences 0.9, 0.9 (bin 13), 0.6, 0.6 (bin 9).
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    targets = torch.tensor([0, 0, 0, 0])  # right, wrong, right, wrong
    # bin 13: accuracy 1/2, confidence 0.9 -> |0.5 - 0.9| = 0.4, weight 1/2
    # bin 9:  accuracy 1/2, confidence 0.6 -> 0.1, weight 1/2
    assert calibration_error(probs, targets) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert calibration_error(perfect, torch.tensor([0, 1])) == pytest.approx(0.0)


def test_multilabel_ece_by_hand():
    # finding 0: p = 0.2, 0.2, 0.8, 0.8 with targets 0, 1, 1, 1
    #   bin of 0.2: frequency 1/2 vs 0.2 -> 0.3; bin of 0.8: 1 vs 0.8 -> 0.2; ECE 0.25
    # finding 1: p = 0.5 everywhere, targets 1, 1, 0, 0 -> frequency 0.5: ECE 0
    probs = torch.tensor([[0.2, 0.5], [0.2, 0.5], [0.8, 0.5], [0.8, 0.5]])
    targets = torch.tensor([[0, 1], [1, 1], [1, 0], [1, 0]])
    assert calibration_error(probs, targets) == pytest.approx((0.25 + 0.0) / 2)


def test_ece_refuses_logits():
    with pytest.raises(ConfigError, match="probabilities"):
        calibration_error(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))
