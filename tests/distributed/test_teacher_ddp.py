"""Two real DDP processes (gloo): the EMA teacher is the EMA of the student, step by step,
and stays identical on every rank."""

import math
from pathlib import Path

import pytest
import torch

from conftest import ddp_pretrain

SCRIPTS = Path(__file__).parent / "scripts"

# A low starting momentum, no warm-up and a large learning rate, so that the teacher
# moves by far more than the tolerance within 4 steps (the configs' 0.99-0.996 and
# warm-up would move it by ~1e-7 and hide a wrong update).
FAST_EMA = ("--model.init_args.teacher_momentum", "0.9", "--model.init_args.base_lr", "0.05",
            "--model.init_args.warmup_epochs", "0")  # fmt: skip
METHODS = {
    "byol": ("configs/byol/vit_tiny_cifar.yaml", "cosine", "--model.init_args.prediction_hidden_dim",
             "64", "--model.init_args.projection_hidden_dim", "64"),
    "dino": ("configs/dino/vit_tiny_cifar.yaml", "cosine", "--model.init_args.out_dim", "256",
             "--model.init_args.projection_hidden_dim", "64",
             "--data.transform.init_args.n_local", "2"),
    "ijepa": ("configs/ijepa/vit_tiny_cifar.yaml", "linear", "--model.init_args.predictor_depth", "1"),
}  # fmt: skip
STEPS, M0, M_END = 4, 0.9, 1.0
TOL = 1e-6


def expected_momentum(k: int, schedule: str) -> float:
    """The teacher momentum at optimizer step k = 0..K-1 (BYOL's tau_k; I-JEPA's linear ramp)."""
    if schedule == "linear":
        return M0 + (M_END - M0) * k / STEPS
    return M_END - (M_END - M0) * (math.cos(math.pi * k / STEPS) + 1) / 2


@pytest.mark.parametrize("method", METHODS)
def test_teacher_is_the_ema_of_the_student_and_identical_on_both_ranks(method, tiny_npz, tmp_path):
    run = tmp_path / method
    config, schedule, *extra = METHODS[method]
    ddp_pretrain(
        config, tiny_npz, run, *extra, *FAST_EMA, "--trainer.max_steps", str(STEPS),
        "--trainer.callbacks+=teacher_dump.DumpTeacher", "--knn_monitor.every_n_epochs", "0",
        pythonpath=str(SCRIPTS),
    )  # fmt: skip
    t0 = torch.load(run / "teacher_rank0.pt", weights_only=True)
    t1 = torch.load(run / "teacher_rank1.pt", weights_only=True)
    assert t0.keys() == t1.keys() and len(t0) > 10
    for name in t0:
        assert torch.equal(t0[name], t1[name]), name

    # The EMA by hand: teacher_0 = student_0, teacher_k = m_k teacher_{k-1} + (1 - m_k)
    # student_k, with student_k the student after optimizer step k; checked after every
    # step (at the batch end, where a checkpoint may be written) and at the end.
    h = torch.load(run / "ema_history.pt", weights_only=True)
    assert h["total_steps"] == STEPS and h["steps"] == list(range(1, STEPS + 1))
    momenta = [expected_momentum(k, schedule) for k in range(STEPS)]
    assert h["momenta"] == pytest.approx(momenta, abs=1e-12)
    names = h["names"]
    assert any(t.startswith("teacher_backbone.") for t in names.values())
    assert set(names.values()) == {n for n in t0 if n.startswith("teacher_")}
    moved = 0.0
    for s_name, t_name in names.items():
        initial = h["students"][0][s_name].double()
        assert torch.equal(h["teachers"][0][t_name], h["students"][0][s_name]), t_name
        teacher = initial
        for k in range(STEPS):
            student_k = h["students"][k + 1][s_name].double()
            teacher = momenta[k] * teacher + (1 - momenta[k]) * student_k
            dumped = h["teachers"][k + 1][t_name].double()
            assert torch.allclose(dumped, teacher, rtol=0, atol=TOL), (t_name, k + 1)
        assert torch.allclose(t0[t_name].double(), teacher, rtol=0, atol=TOL), t_name
        moved = max(moved, (teacher - initial).abs().max().item())
    # Not a check that holds anyway: the teacher moved by far more than the tolerance.
    assert moved > 100 * TOL

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == STEPS
    for name in t0:
        assert torch.equal(ckpt["state_dict"][name], t0[name]), name
    if method == "dino":
        assert "criterion.center" in t0 and t0["criterion.center"].abs().sum() > 0
        assert t0["criterion.center"].dtype == torch.float32
        assert t0["criterion.center"].shape == (1, 1, 256)
