"""Backbone export: strict round trips into timm and into selfsup, and the loader reads exports."""

import json

import pytest
import timm
import torch
from safetensors import safe_open

from selfsup.errors import ConfigError
from selfsup.eval.loading import load_backbone
from selfsup.export import export_backbone, load_export
from selfsup.methods import DINO, SimCLR


def save_checkpoint(model, path):
    torch.save({"state_dict": model.state_dict(), "selfsup": model.checkpoint_metadata()}, path)
    return path


def test_vit_export_loads_into_plain_timm_strictly_with_the_same_features(tmp_path):
    torch.manual_seed(0)
    model = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 4, "depth": 2},
                 projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    with torch.no_grad():  # teacher != student, so the export must pick the teacher (DINO's)
        for p in model.backbone.parameters():
            p.add_(0.1)
    ckpt = save_checkpoint(model, tmp_path / "dino.ckpt")
    out = tmp_path / "dino.safetensors"
    result = export_backbone(ckpt, out)
    assert result["weights"] == "teacher" and result["timm_buildable"]
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    vit = timm.create_model(meta["timm_name"], **json.loads(meta["timm_kwargs"]))
    vit.load_state_dict(weights, strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.teacher_backbone.eval()(x)
        assert torch.allclose(vit.eval()(x), expected, atol=1e-6)
        assert torch.allclose(load_export(out)(x), expected, atol=1e-6)
        assert torch.allclose(load_backbone(out).backbone(x), expected, atol=1e-6)


def test_cifar_stem_resnet_rebuilds_through_selfsup(tmp_path):
    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True, "in_chans": 1},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    ckpt = save_checkpoint(model, tmp_path / "simclr.ckpt")
    out = tmp_path / "simclr.safetensors"
    result = export_backbone(ckpt, out)
    assert result["weights"] == "student" and not result["timm_buildable"]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(load_export(out)(x), model.backbone.eval()(x), atol=1e-6)
    loaded = load_backbone(out)
    assert loaded.meta["in_chans"] == 1 and loaded.meta["loaded"] == "student"
    with pytest.raises(ConfigError, match="holds the student backbone only"):
        load_backbone(out, which="teacher")
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        export_backbone(ckpt, tmp_path / "simclr.pt")
