"""DINOv2's loss terms against their reference formulas written as naive loops: iBOT's
masked-patch cross-entropy, KoLeo, Sinkhorn-Knopp (and its marginals), Gram anchoring."""

import math

import pytest
import torch

from selfsup.losses import (
    dino_cross_entropy,
    dino_loss,
    gram_loss,
    ibot_patch_loss,
    koleo_loss,
    sinkhorn_knopp,
    teacher_probabilities,
)


def test_ibot_loss_matches_dinov2s_per_image_masked_mean_as_a_loop():
    g = torch.Generator().manual_seed(0)
    b, n, k = 5, 12, 7
    teacher = torch.softmax(torch.randn(b, n, k, generator=g), -1)
    student = torch.randn(b, n, k, generator=g)
    masks = torch.rand(b, n, generator=g) < 0.4
    masks[1] = False  # an unmasked image counts as zero in the mean over images
    masks[2, :3] = True
    loss = ibot_patch_loss(teacher[masks], student[masks], masks, student_temp=0.1)
    # DINOv2's iBOTPatchLoss.forward on full (B, N, K) tokens, as loops:
    # mean over images of (sum over masked patches of H(t, s)) / max(1, |masked|).
    total = 0.0
    for i in range(b):
        per_image, count = 0.0, 0
        for j in range(n):
            if masks[i, j]:
                log_s = torch.log_softmax(student[i, j].double() / 0.1, 0)
                per_image += float(-(teacher[i, j].double() * log_s).sum())
                count += 1
        total += per_image / max(count, 1)
    assert loss.item() == pytest.approx(total / b, rel=1e-5)


def test_ibot_loss_refuses_rows_that_are_not_the_masked_patches():
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[0, 1] = True
    with pytest.raises(ValueError, match="one teacher and one student row per masked patch"):
        ibot_patch_loss(torch.ones(2, 3) / 3, torch.zeros(2, 3), masks)


def test_koleo_matches_the_nearest_neighbour_estimator_as_a_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, generator=g) * 3
    x[4] = x[2] * 2.0  # same direction: distance 0 after normalisation (the eps term)
    unit = [v.double() / v.double().norm() for v in x]
    total = 0.0
    for i in range(len(x)):
        # torch's pairwise distance adds its eps to the difference (DINOv2's nn.PairwiseDistance(2, eps=1e-8)).
        nearest = min(float((unit[i] - unit[j] + 1e-8).norm()) for j in range(len(x)) if j != i)
        total += -math.log(nearest + 1e-8)
    assert koleo_loss(x).item() == pytest.approx(total / len(x), rel=1e-4)
    # Spreading the features lowers it: the regulariser's direction.
    assert koleo_loss(torch.eye(5)).item() < koleo_loss(x).item()


def naive_sinkhorn(logits: torch.Tensor, temp: float, iterations: int) -> torch.Tensor:
    """DINOv2's sinkhorn_knopp_teacher (one process), entry by entry in float64."""
    q = [[math.exp(float(v) / temp) for v in row] for row in logits.double()]  # (B, K)
    b, k = len(q), len(q[0])
    s = sum(map(sum, q))
    q = [[v / s for v in row] for row in q]
    for _ in range(iterations):
        for p in range(k):  # every prototype gets 1 / K of the mass
            col = sum(q[i][p] for i in range(b))
            for i in range(b):
                q[i][p] /= col * k
        for i in range(b):  # every sample 1 / B
            row = sum(q[i])
            q[i] = [v / (row * b) for v in q[i]]
    return torch.tensor([[v * b for v in row] for row in q], dtype=torch.float64)


def test_sinkhorn_knopp_matches_the_reference_loop_and_its_marginals():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(10, 6, generator=g)
    logits[:, 0] += 2.0  # one prototype the teacher prefers: SK spreads it out
    q = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=3)
    assert torch.allclose(q.double(), naive_sinkhorn(logits, 0.5, 3), rtol=1e-5, atol=1e-7)
    assert torch.allclose(q.sum(1), torch.ones(10), atol=1e-6)  # each row an assignment
    # Converged, every prototype holds B / K of the batch (the equipartition constraint),
    # where the plain softmax gave prototype 0 most of it.
    converged = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=200)
    assert torch.allclose(converged.sum(0), torch.full((6,), 10 / 6), atol=1e-4)
    assert torch.softmax(logits / 0.5, -1).sum(0)[0] > 5
    # Large logits do not overflow (the maximum is taken out before exp).
    assert torch.isfinite(sinkhorn_knopp(logits * 100, 0.04)).all()


def test_dino_cross_entropy_with_centred_targets_is_dinos_loss():
    g = torch.Generator().manual_seed(3)
    teacher, student = torch.randn(2, 4, 8, generator=g), torch.randn(5, 4, 8, generator=g)
    centre = torch.randn(8, generator=g) * 0.1
    probs = teacher_probabilities(teacher, centre, 0.04)
    assert dino_cross_entropy(probs, student).item() == pytest.approx(
        dino_loss(teacher, student, centre, 0.04).item(), rel=1e-6
    )


@pytest.mark.parametrize("remove_neg", [False, True])
def test_gram_loss_matches_the_similarity_matrices_as_loops(remove_neg):
    g = torch.Generator().manual_seed(4)
    b, p, d = 3, 5, 4
    student, target = torch.randn(b, p, d, generator=g), torch.randn(b, p, d, generator=g)
    total = 0.0
    for i in range(b):
        for j in range(p):
            for m in range(p):
                cs = float(
                    torch.cosine_similarity(student[i, j].double(), student[i, m].double(), 0)
                )
                ct = float(torch.cosine_similarity(target[i, j].double(), target[i, m].double(), 0))
                if remove_neg:
                    cs, ct = max(cs, 0.0), max(ct, 0.0)
                total += (cs - ct) ** 2
    loss = gram_loss(student, target, remove_neg)
    assert loss.item() == pytest.approx(total / (b * p * p), rel=1e-5)
    # Scaling the features changes nothing (normalised); the same features give 0.
    assert gram_loss(student * 5, student).item() == pytest.approx(0.0, abs=1e-10)
