"""The weighted kNN vote (selfsup.knn) against a naive loop and closed cases."""

import pytest
import torch

from conftest import naive_weighted_knn
from selfsup.knn import knn_scores, knn_top1


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
