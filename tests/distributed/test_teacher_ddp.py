"""Two real DDP processes (gloo): the EMA teacher stays identical on every rank."""

from pathlib import Path

import pytest
import torch

from conftest import ddp_pretrain

SCRIPTS = Path(__file__).parent / "scripts"


METHODS = {
    "byol": ("configs/byol/vit_tiny_cifar.yaml", "--model.init_args.prediction_hidden_dim", "64",
             "--model.init_args.projection_hidden_dim", "64"),
    "dino": ("configs/dino/vit_tiny_cifar.yaml", "--model.init_args.out_dim", "256",
             "--model.init_args.projection_hidden_dim", "64",
             "--data.transform.init_args.n_local", "2"),
    "ijepa": ("configs/ijepa/vit_tiny_cifar.yaml", "--model.init_args.predictor_depth", "1"),
}  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_teacher_identical_on_both_ranks_after_several_steps(method, tiny_npz, tmp_path):
    run = tmp_path / method
    config, *extra = METHODS[method]
    ddp_pretrain(
        config, tiny_npz, run, *extra, "--trainer.max_steps", "4",
        "--trainer.callbacks+=teacher_dump.DumpTeacher", "--knn_monitor.every_n_epochs", "0",
        pythonpath=str(SCRIPTS),
    )  # fmt: skip
    t0 = torch.load(run / "teacher_rank0.pt", weights_only=True)
    t1 = torch.load(run / "teacher_rank1.pt", weights_only=True)
    assert t0.keys() == t1.keys() and len(t0) > 10
    for name in t0:
        assert torch.equal(t0[name], t1[name]), name
    # ...and it moved away from its initial copy of the student.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    student = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    assert any(not torch.equal(student[k], t0["teacher_" + k]) for k in student)
    if method == "dino":
        assert "criterion.center" in t0 and t0["criterion.center"].abs().sum() > 0
        assert torch.equal(ckpt["state_dict"]["criterion.center"], t0["criterion.center"])
