"""Triplet loss against a naive per-anchor loop from its formula, and closed forms."""

import math

import pytest
import torch

from selfsup.losses import triplet_loss


def naive_triplet(z0, z1, margin, mining, squared):
    """max(0, d(a, p) - d(a, n) + m) per anchor, written out; each view anchors once."""
    n = z0.shape[0]
    views = [[z0[i] / z0[i].norm(), z1[i] / z1[i].norm()] for i in range(n)]

    def d(u, v):
        sq = float(((u - v) ** 2).sum())
        return sq if squared else math.sqrt(sq)

    total = 0.0
    for i in range(n):
        for v in (0, 1):
            a, p = views[i][v], views[i][1 - v]
            d_ap = d(a, p)
            negs = [d(a, views[j][w]) for j in range(n) if j != i for w in (0, 1)]
            if mining == "batch_hard":
                d_an = min(negs)
            else:  # semi_hard: closest negative farther than the positive, else the farthest
                outside = [x for x in negs if x > d_ap]
                d_an = min(outside) if outside else max(negs)
            total += max(0.0, d_ap - d_an + margin)
    return total / (2 * n)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("n,dim,margin", [(4, 3, 0.2), (9, 8, 1.0)])
def test_matches_naive_loop(mining, squared, n, dim, margin):
    g = torch.Generator().manual_seed(n + dim)
    z0, z1 = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    got = triplet_loss(z0, z1, margin, mining, squared).item()
    assert got == pytest.approx(naive_triplet(z0, z1, margin, mining, squared), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mining", ["random", "batch_hard", "semi_hard"])
def test_closed_forms(mining):
    # Collapsed embeddings: every distance is 0, the loss is the margin.
    z = torch.ones(6, 4)
    assert triplet_loss(z, z.clone(), 0.3, mining).item() == pytest.approx(0.3, abs=1e-6)
    # Orthogonal images, identical views: d(a, p) = 0, d(a, n) = 2 > margin: zero loss.
    eye = torch.eye(6)
    assert triplet_loss(eye, eye.clone(), 0.5, mining).item() == pytest.approx(0.0, abs=1e-6)


def test_random_mining_never_picks_the_positive_image():
    # Two images, so the only negatives are the other image's two views.
    z0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z1 = z0.clone()
    # d(a, p) = 0 and any negative is at squared distance 2: loss = max(0, 0 - 2 + 3) = 1.
    g = torch.Generator().manual_seed(0)
    assert triplet_loss(z0, z1, 3.0, "random", generator=g).item() == pytest.approx(1.0, rel=1e-6)
