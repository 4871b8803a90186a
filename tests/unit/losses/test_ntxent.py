"""NT-Xent against SimCLR's Algorithm 1 written as a naive loop, and closed forms."""

import math

import pytest
import torch

from selfsup.losses import NTXentLoss, nt_xent_loss


def naive_nt_xent(z0: torch.Tensor, z1: torch.Tensor, tau: float) -> float:
    """Algorithm 1 of Chen et al. (2020), literally: views interleaved as z_{2k-1}, z_{2k}."""
    n = z0.shape[0]
    z = []
    for k in range(n):
        z += [z0[k].double(), z1[k].double()]

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    def ell(i, j):
        num = math.exp(sim(z[i], z[j]) / tau)
        den = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        return -math.log(num / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (8, 16, 0.1), (17, 5, 1.0)])
def test_matches_algorithm_1(n, d, tau):
    g = torch.Generator().manual_seed(n * d)
    z0, z1 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent_loss(z0, z1, tau).item() == pytest.approx(
        naive_nt_xent(z0, z1, tau), rel=1e-5, abs=1e-6
    )


@pytest.mark.parametrize("n", [1, 4, 32])
def test_collapsed_embeddings_give_log_2n_minus_1(n):
    z = torch.ones(n, 7)
    assert nt_xent_loss(z, z.clone(), 0.3).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_swapping_views_changes_nothing():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    assert nt_xent_loss(z0, z1, 0.2).item() == pytest.approx(
        nt_xent_loss(z1, z0, 0.2).item(), rel=1e-6
    )


def test_scale_invariant_and_perfect_pairs_are_near_zero():
    g = torch.Generator().manual_seed(1)
    z0 = torch.nn.functional.normalize(torch.randn(6, 64, generator=g), dim=1)
    assert nt_xent_loss(z0, 3 * z0, 0.5).item() == pytest.approx(
        nt_xent_loss(z0, z0, 0.5).item(), rel=1e-6
    )
    # Orthogonal embeddings with identical pairs: loss -> 0 as tau -> 0.
    eye = torch.eye(6)
    assert nt_xent_loss(eye, eye, 0.01).item() < 1e-6


def test_fp32_under_bf16_autocast_and_module_wrapper():
    g = torch.Generator().manual_seed(2)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = NTXentLoss(temperature=0.1)(z0.bfloat16(), z1.bfloat16())
    assert loss.dtype == torch.float32
    ref = naive_nt_xent(z0.bfloat16().float(), z1.bfloat16().float(), 0.1)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
