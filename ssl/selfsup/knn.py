"""Weighted k-nearest-neighbour classification on features (Wu et al., 2018; DINO's eval_knn).

Each query's k most cosine-similar training features vote for their labels with weight
``exp(similarity / T)``. Single-label: the class with the largest total wins. Multi-label
(labels ``(N, K)`` in {0, 1}): each finding is scored by its similarity-weighted vote,
``sum_j w_j y_jk``, of the k neighbours. Scores are returned as vote shares (divided by
``sum_j w_j``), so they lie in [0, 1] and rank queries for AUROC; the argmax is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multilabel_auroc


@torch.no_grad()
def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    ks: Sequence[int] = (20,),
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[int, torch.Tensor]:
    """Vote shares ``(n_test, num_classes)`` of the weighted kNN, for each k in ``ks``.

    Args:
        train_feats: memory bank ``(n_train, D)``; test_feats: queries ``(n_test, D)``.
        train_labels: ``(n_train,)`` int labels in ``[0, num_classes)``, or multi-label
            ``(n_train, num_classes)`` in {0, 1} (one column per finding).
        chunk_size: queries per similarity block, so memory stays bounded for any size.

    A k larger than the memory bank uses the whole bank.
    """
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    if train_labels.ndim == 2:
        if train_labels.shape[1] != num_classes:
            raise ValueError(f"{train_labels.shape[1]} label columns for {num_classes} findings")
        targets = train_labels.float()
    else:
        targets = F.one_hot(train_labels.long(), num_classes).float()
    k_max = min(max(ks), train.shape[0])
    scores = {k: torch.zeros(test.shape[0], num_classes) for k in ks}
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start : start + chunk_size] @ train.T  # (c, n_train)
        top_sim, top_idx = sim.topk(k_max, dim=1)  # sorted, most similar first
        weights = (top_sim / temperature).exp()
        neighbours = targets.to(sim.device)[top_idx]  # (c, k_max, num_classes)
        for k in ks:
            kk = min(k, k_max)
            votes = torch.einsum("ck,ckn->cn", weights[:, :kk], neighbours[:, :kk])
            share = votes / weights[:, :kk].sum(1, keepdim=True)
            scores[k][start : start + sim.shape[0]] = share.cpu()
    return scores


def knn_top1(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    num_classes = int(max(train_labels.max(), test_labels.max()).item()) + 1
    scores = knn_scores(train_feats, train_labels, test_feats, num_classes, (k,), temperature)[k]
    return (scores.argmax(dim=1) == test_labels.cpu().long()).float().mean().item()


def knn_macro_auroc(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Macro AUROC of the weighted kNN's vote shares, labels ``(N, K)`` in {0, 1}: the mean
    over the findings with positives and negatives among the queries (nan if none has)."""
    n_findings = train_labels.shape[1]
    scores = knn_scores(train_feats, train_labels, test_feats, n_findings, (k,), temperature)[k]
    target = test_labels.cpu().long()
    both = (target.min(0).values == 0) & (target.max(0).values == 1)
    if not both.any():
        return float("nan")
    auroc = multilabel_auroc(scores[:, both], target[:, both], int(both.sum()), average="macro")
    return float(auroc)
