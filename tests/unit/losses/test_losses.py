"""DINO's, MAE's and I-JEPA's losses against their papers' formulas, written as naive
loops and closed forms (NT-Xent, triplet and BYOL's cosine loss have their own files)."""

import math

import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss

from selfsup.losses import (
    DINOLoss,
    dino_loss,
    ijepa_loss,
    mae_loss,
    patch_statistics,
    teacher_probabilities,
    updated_center,
)

# -- DINO ---------------------------------------------------------------------------------


def naive_dino(teacher, student, centre, t_temp, s_temp):
    """Algorithm 1 of the paper, generalised to multi-crop as in its Eq. (3) and the
    reference code: for each teacher global view i and each student view j != i, the
    cross-entropy H(P_t, P_s) = -sum_k P_t[k] log P_s[k] with P_t = softmax((t - C) / tau_t)
    and P_s = softmax(s / tau_s); averaged over images, then over the pairs."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            pair = 0.0
            for b in range(len(t)):
                e_t = [
                    math.exp((float(t[b, k]) - float(centre[k])) / t_temp)
                    for k in range(len(centre))
                ]
                e_s = [math.exp(float(s[b, k]) / s_temp) for k in range(len(centre))]
                for k in range(len(centre)):
                    p_t = e_t[k] / sum(e_t)
                    pair -= p_t * math.log(e_s[k] / sum(e_s))
            total += pair / len(t)
            pairs += 1
    return total / pairs


def dino_problem(n_local: int, batch: int = 3, k: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(batch, k, generator=g) for _ in range(2)]
    student = [torch.randn(batch, k, generator=g) for _ in range(2 + n_local)]
    centre = 0.3 * torch.randn(k, generator=g)
    return teacher, student, centre


@pytest.mark.parametrize("n_local", [0, 1, 4])
@pytest.mark.parametrize("t_temp,s_temp", [(0.04, 0.1), (0.07, 0.1), (1.0, 0.5)])
def test_dino_loss_matches_the_paper_loop(n_local, t_temp, s_temp):
    teacher, student, centre = dino_problem(n_local)
    loss = dino_loss(teacher, student, centre, t_temp, s_temp)
    assert loss.item() == pytest.approx(
        naive_dino(teacher, student, centre, t_temp, s_temp), rel=1e-5
    )
    # Stacked tensors and the module's (1, 1, K) centre give the same value.
    stacked = dino_loss(
        torch.stack(teacher), torch.stack(student), centre.reshape(1, 1, -1), t_temp, s_temp
    )
    assert stacked.item() == pytest.approx(loss.item(), rel=1e-6)


def test_dino_uniform_outputs_give_ln_k_and_a_perfect_one_hot_match_gives_zero():
    k = 16
    flat = [torch.zeros(4, k) for _ in range(2)]
    assert dino_loss(
        flat, [*flat, torch.zeros(4, k)], torch.zeros(k), 0.04
    ).item() == pytest.approx(math.log(k), rel=1e-6)
    # Every view puts all its (sharpened) mass on prototype 0: P_t = P_s = one-hot, H = 0.
    peaked = [torch.eye(k)[[0, 0]] * 100.0 for _ in range(3)]
    assert dino_loss(peaked[:2], peaked, torch.zeros(k), 0.04).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_dino_gradient_reaches_the_student_only_and_fp32_under_bf16():
    teacher, student, centre = dino_problem(2)
    teacher = [t.requires_grad_(True) for t in teacher]
    student = [s.requires_grad_(True) for s in student]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dino_loss([t.bfloat16() for t in teacher], student, centre, 0.04)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(t.grad is None for t in teacher) and all(s.grad is not None for s in student)
    with pytest.raises(ValueError, match="no pair"):
        dino_loss(teacher[:1], student[:1], centre, 0.04)


def test_teacher_probabilities_are_the_centred_sharpened_softmax():
    teacher, _, centre = dino_problem(0)
    p = teacher_probabilities(teacher[0], centre, 0.04)
    expected = torch.softmax((teacher[0].double() - centre.double()) / 0.04, dim=1)
    assert p.dtype == torch.float32 and torch.allclose(p.double(), expected, atol=1e-6)


def test_dino_centre_is_the_ema_of_the_teacher_batch_mean():
    teacher, student, centre = dino_problem(2)
    new = updated_center(centre, teacher, 0.9)
    batch_mean = sum(t[b] for t in teacher for b in range(len(t))) / (2 * len(teacher[0]))
    assert torch.allclose(new, 0.9 * centre + 0.1 * batch_mean, atol=1e-6)
    # The module: the loss uses the centre as it was, then the centre moves, in fp32.
    module = DINOLoss(out_dim=7, student_temp=0.1, center_momentum=0.9)
    module.center.copy_(centre.reshape(1, 1, -1))
    loss = module([t.bfloat16() for t in teacher], student, teacher_temp=0.04)
    assert loss.item() == pytest.approx(
        dino_loss([t.bfloat16() for t in teacher], student, centre, 0.04).item(), rel=1e-6
    )
    assert module.center.dtype == torch.float32 and module.center.shape == (1, 1, 7)
    bf16_mean = sum(t.bfloat16().float()[b] for t in teacher for b in range(3)) / 6
    assert torch.allclose(module.center.flatten(), 0.9 * centre + 0.1 * bf16_mean, atol=1e-6)
    assert list(module.state_dict()) == ["center"]  # the checkpoint key criterion.center


def test_dino_module_equals_lightlys_and_reads_its_state():
    """The loss selfsup used before: same values, same centre, same checkpoint entry."""
    teacher, student, centre = dino_problem(2)
    ours, theirs = (
        DINOLoss(7, 0.1, 0.9),
        LightlyDINOLoss(output_dim=7, student_temp=0.1, center_momentum=0.9),
    )
    theirs.center.copy_(centre.reshape(1, 1, -1))
    ours.load_state_dict(theirs.state_dict())
    for _ in range(3):
        a = ours(teacher, student, teacher_temp=0.05)
        b = theirs(teacher, student, teacher_temp=0.05)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)
        assert torch.allclose(ours.center, theirs.center, atol=1e-7)


# -- MAE ----------------------------------------------------------------------------------


def naive_mae(pred, target, mask, norm_pix_loss):
    """The paper's loss: MSE per masked patch (norm_pix_loss: the target patch minus its
    mean, over sqrt(unbiased variance + 1e-6)), averaged over masked patches only."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for patch in range(pred.shape[1]):
            if not mask[b, patch]:
                continue
            t = [float(v) for v in target[b, patch]]
            if norm_pix_loss:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)
                t = [(v - mean) / math.sqrt(var + 1e-6) for v in t]
            p = [float(v) for v in pred[b, patch]]
            total += sum((pv - tv) ** 2 for pv, tv in zip(p, t, strict=True)) / len(t)
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_loss_equals_the_per_patch_loop_over_masked_patches(norm_pix_loss):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 6, 12, generator=g), 2 + 3 * torch.randn(3, 6, 12, generator=g)
    mask = (torch.rand(3, 6, generator=g) > 0.5).float()
    mask[0, 0] = 1.0
    loss = mae_loss(pred, target, mask, norm_pix_loss)
    assert loss.item() == pytest.approx(naive_mae(pred, target, mask, norm_pix_loss), rel=1e-5)
    # Visible patches are never scored; a bool mask means the same.
    changed = pred.clone()
    changed[mask == 0] += 10.0
    assert mae_loss(changed, target, mask.bool(), norm_pix_loss).item() == pytest.approx(
        loss.item(), rel=1e-6
    )


def test_mae_loss_closed_forms_and_fp32_under_bf16():
    target = torch.randn(2, 4, 12)
    mask = torch.ones(2, 4)
    assert mae_loss(target, target, mask, norm_pix_loss=False).item() == 0.0
    assert mae_loss(target + 0.5, target, mask, norm_pix_loss=False).item() == pytest.approx(0.25)
    # A flat patch normalises to 0 (variance 0, eps 1e-6): the loss is the prediction's mean square.
    flat = torch.full((1, 1, 12), 7.0)
    pred = torch.full((1, 1, 12), 0.5)
    assert mae_loss(pred, flat, torch.ones(1, 1)).item() == pytest.approx(0.25)
    # norm_pix_loss ignores the patch's brightness and contrast.
    assert mae_loss(pred, 3 * target + 2, mask).item() == pytest.approx(
        mae_loss(pred, target, mask).item(), rel=1e-4
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mae_loss(target.bfloat16(), target, mask).dtype == torch.float32


def test_patch_statistics_are_mean_and_unbiased_std():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mean, std = patch_statistics(x)
    assert mean.item() == 3.0 and std.item() == pytest.approx(math.sqrt(14 / 3 + 1e-6))


# -- I-JEPA -------------------------------------------------------------------------------


def naive_ijepa(pred, target, distance):
    """Per element: d = pred - LN(target) with LN over the feature dimension (mean, biased
    variance, eps 1e-5, no affine); smooth-L1 (beta 1) or squared; averaged over all."""
    total, n = 0.0, 0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            t = [float(v) for v in target[i, j]]
            mean = sum(t) / len(t)
            var = sum((v - mean) ** 2 for v in t) / len(t)
            for k, v in enumerate(t):
                d = float(pred[i, j, k]) - (v - mean) / math.sqrt(var + 1e-5)
                if distance == "l2":
                    total += d * d
                else:
                    total += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
                n += 1
    return total / n


@pytest.mark.parametrize("distance", ["smooth_l1", "l2"])
def test_ijepa_loss_matches_the_loop_on_layer_normed_targets(distance):
    g = torch.Generator().manual_seed(0)
    pred = 1.5 * torch.randn(4, 5, 8, generator=g)  # both sides of smooth-L1's |d| = 1
    target = 3 + 2 * torch.randn(4, 5, 8, generator=g)
    loss = ijepa_loss(pred, target, distance)
    assert loss.item() == pytest.approx(naive_ijepa(pred, target, distance), rel=1e-5)


@pytest.mark.parametrize("c", [0.0, 0.3, -0.8, 2.0, -5.0])
def test_ijepa_loss_closed_forms_for_a_constant_offset(c):
    g = torch.Generator().manual_seed(1)
    target = 4 + 10 * torch.randn(3, 6, 16, generator=g)
    normed = torch.nn.functional.layer_norm(target, (16,))
    smooth = 0.5 * c * c if abs(c) < 1 else abs(c) - 0.5
    assert ijepa_loss(normed + c, target).item() == pytest.approx(smooth, abs=1e-6)
    assert ijepa_loss(normed + c, target, "l2").item() == pytest.approx(c * c, abs=1e-6)
    # Layer norm makes the target's per-token offset and scale irrelevant.
    assert ijepa_loss(normed + c, 0.5 * target - 7).item() == pytest.approx(smooth, abs=1e-5)


def test_ijepa_loss_stops_the_targets_gradient_and_is_fp32_under_bf16():
    pred = torch.randn(2, 3, 8, requires_grad=True)
    target = torch.randn(2, 3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ijepa_loss(pred.bfloat16(), target.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert pred.grad is not None and target.grad is None
