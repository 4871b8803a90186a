"""Backbone export: strict round trips into timm and into selfsup, and the loader reads exports."""

import json

import pytest
import timm
import torch
from safetensors import safe_open

from selfsup.checkpoints import export_backbone, load_backbone, load_export
from selfsup.errors import ConfigError
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


def test_vit_last_blocks_features_follow_dino_linear_eval():
    from selfsup.backbones import Backbone
    from selfsup.eval.blocks import LastBlocksFeatures

    torch.manual_seed(0)
    backbone = Backbone("vit_tiny", img_size=32, patch_size=8, depth=3).eval()
    x = torch.randn(2, 3, 32, 48)  # not the training size, not square
    vit = backbone.model
    with torch.no_grad():
        # DINO's eval_linear by hand: every block's output through the final norm.
        tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        normed = []
        for block in vit.blocks:
            tokens = block(tokens)
            normed.append(vit.norm(tokens))
        expected = torch.cat([normed[-2][:, 0], normed[-1][:, 0], normed[-1][:, 1:].mean(1)], -1)
        assert torch.allclose(LastBlocksFeatures(backbone, 2, True)(x), expected, atol=1e-5)
        assert torch.allclose(LastBlocksFeatures(backbone, 1)(x), backbone(x), atol=1e-6)
    with pytest.raises(ConfigError, match="has 3 blocks"):
        LastBlocksFeatures(backbone, 4)
    with pytest.raises(ConfigError, match="apply to ViTs"):
        LastBlocksFeatures(Backbone("resnet18"), 2)


@pytest.mark.parametrize(
    "name,suffix", [("vit_tiny_patch16_224", ".pth"), ("resnet18", ".safetensors")]
)
def test_timm_weights_file_loads_by_model_name(tmp_path, name, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()  # a timm checkpoint keeps its head
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    else:
        save_file(model.state_dict(), str(path))
    loaded = load_backbone(path, timm_model=name)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(loaded.backbone(x), expected, atol=1e-5)
    assert loaded.meta["image_size"] == 224 and loaded.meta["mean"] == list(
        model.pretrained_cfg["mean"]
    )
    # The prefixes init_from strips (DDP's "module.", "backbone.") are stripped here too;
    # any other prefix fails instead of loading nothing.
    for prefix in ("module.", "backbone.", "net."):
        torch.save({f"{prefix}{k}": v for k, v in model.state_dict().items()}, tmp_path / "p.pth")
        if prefix != "net.":
            assert torch.equal(
                load_backbone(tmp_path / "p.pth", timm_model=name).backbone(x), loaded.backbone(x)
            )
        else:
            with pytest.raises(ConfigError, match="does not hold"):
                load_backbone(tmp_path / "p.pth", timm_model=name)
