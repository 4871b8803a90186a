"""What `trainer.sync_batchnorm: true` does to a teacher-student model, checked structurally.

SyncBatchNorm has no CPU kernel, so its numerics are not run here; the conversion
Lightning applies under DDP is: every BatchNorm (student, heads and teacher)
becomes a SyncBatchNorm holding the same parameters and statistics, and the EMA
still pairs each student parameter with its own teacher parameter.
"""

import torch
from pytorch_lightning.plugins import TorchSyncBatchNorm
from torch import nn

from selfsup.methods import BYOL, DINO


def batchnorms(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_conversion_reaches_student_heads_and_teacher_and_keeps_the_ema_pairs():
    torch.manual_seed(0)
    model = BYOL(backbone="resnet18", backbone_kwargs={"cifar_stem": True},
                 projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32)  # fmt: skip
    names = batchnorms(model)
    assert any(n.startswith("teacher_backbone.") for n in names)
    assert any(n.startswith("prediction_head.") for n in names)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = TorchSyncBatchNorm().apply(model)
    converted = dict(model.named_modules())
    assert all(isinstance(converted[n], nn.SyncBatchNorm) for n in names)
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Teacher parameters are still frozen and distinct from the student's, and the
    # EMA walks the converted modules pair by pair.
    for student, teacher in model._ema_pairs:
        s, t = list(student.parameters()), list(teacher.parameters())
        assert len(s) == len(t) and all(a is not b and not b.requires_grad for a, b in zip(s, t))
    teacher_bn = model.teacher_backbone.model.bn1
    assert isinstance(teacher_bn, nn.SyncBatchNorm) and not teacher_bn.weight.requires_grad
    with torch.no_grad():
        model.backbone.model.bn1.weight.add_(1.0)
    model.update_teacher(0.5)
    assert torch.allclose(teacher_bn.weight, before["teacher_backbone.model.bn1.weight"] + 0.5)


def test_dino_vit_has_no_batchnorm_to_convert():
    model = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 4},
                 projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    assert batchnorms(model) == []
