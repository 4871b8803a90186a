"""Starting from existing weights (``init_from``): timm files give timm's features, EMA
teachers are exact copies, heads start fresh, adaptations equal timm's own helpers,
wrong weights stop with the key list, a frozen backbone stays put."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from selfsup.checkpoints.sources import plan_init, unwrap_state_dict
from selfsup.errors import ConfigError
from selfsup.methods import BYOL, DINO, SimCLR

VIT = {"img_size": 32, "patch_size": 4, "depth": 2}


def timm_file(tmp_path, name, suffix=".safetensors", nest=None, **kwargs):
    """A timm model with random weights (and its classifier head) saved to disk: the
    stand-in for a released checkpoint."""
    torch.manual_seed(1)
    model = timm.create_model(name, pretrained=False, num_classes=7, **kwargs).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(nest(state) if nest else state, path)
    model.reset_classifier(0)
    return path, model


@pytest.mark.parametrize("method", [SimCLR, DINO, BYOL])
def test_a_timm_vit_file_gives_timms_features_and_the_teacher_a_copy(tmp_path, method):
    path, reference = timm_file(tmp_path, "vit_tiny_patch16_224", **VIT)
    extra = {"projection_hidden_dim": 32}
    extra.update(
        {"bottleneck_dim": 16, "out_dim": 64} if method is DINO else {"projection_dim": 16}
    )
    torch.manual_seed(0)
    model = method(backbone="vit_tiny", backbone_kwargs=VIT, init_from=str(path), **extra)
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if "backbone" not in k}
    model.load_init_weights()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.backbone.eval()(x), reference(x), atol=1e-5)
        if hasattr(model, "teacher_backbone"):
            for (k, s), t in zip(model.backbone.state_dict().items(),
                                 model.teacher_backbone.state_dict().values(), strict=True):  # fmt: skip
                assert torch.equal(s, t), k
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in heads_before.items())  # heads untouched
    assert model.init_record["sha256"] and model.init_record["source"] == str(path)


@pytest.mark.parametrize("nest", [None, lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
                                  lambda s: {"teacher": {f"backbone.{k}": v for k, v in s.items()},
                                             "student": {}, "epoch": 3}])  # fmt: skip
def test_a_timm_resnet_file_nested_or_prefixed_gives_timms_features(tmp_path, nest):
    path, reference = timm_file(tmp_path, "resnet18", ".pth", nest)
    model = SimCLR(backbone="resnet18", init_from=str(path), projection_hidden_dim=32,
                   projection_dim=16)  # fmt: skip
    plan = model.prepare_init()
    assert any("classifier head dropped" in line for line in plan.lines())
    model.load_init_weights()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.backbone.eval()(x), reference(x), atol=1e-5)


def test_image_patch_and_channel_adaptation_equal_timms_helpers(tmp_path):
    path, source = timm_file(tmp_path, "vit_tiny_patch16_224", depth=2)  # 224 px, 14x14 grid
    model = SimCLR(backbone="vit_tiny", backbone_kwargs={**VIT, "in_chans": 1},
                   init_from=str(path), projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    lines = model.prepare_init().lines()
    model.load_init_weights()
    got, src = model.backbone.model.state_dict(), source.state_dict()
    w = src["patch_embed.proj.weight"]  # (192, 3, 16, 16)
    expected = resample_patch_embed(w.sum(1, keepdim=True), [4, 4])
    assert got["patch_embed.proj.weight"].shape == (192, 1, 4, 4)
    assert torch.allclose(got["patch_embed.proj.weight"], expected, atol=1e-6)
    pos = resample_abs_pos_embed(src["pos_embed"], [8, 8], num_prefix_tokens=1)
    assert got["pos_embed"].shape == (1, 65, 192) and torch.allclose(
        got["pos_embed"], pos, atol=1e-6
    )
    assert torch.equal(got["blocks.1.mlp.fc2.weight"], src["blocks.1.mlp.fc2.weight"])
    said = "\n".join(lines)
    assert "14x14 to a 8x8" in said and "3 -> 1 input channel" in said and "16x16 to 4x4" in said


def test_gray_weights_into_rgb_repeat_the_kernel_and_class_token_dropped(tmp_path):
    path, source = timm_file(tmp_path, "vit_tiny_patch16_224", in_chans=1, **VIT)
    model = SimCLR(backbone="vit_tiny", backbone_kwargs={**VIT, "class_token": False, "pool": "avg"},
                   init_from=str(path), projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    lines = model.prepare_init().lines()
    model.load_init_weights()
    w = source.state_dict()["patch_embed.proj.weight"]
    got = model.backbone.model.state_dict()
    assert torch.allclose(got["patch_embed.proj.weight"], w.repeat(1, 3, 1, 1) / 3)
    assert torch.equal(got["pos_embed"], source.state_dict()["pos_embed"][:, 1:])
    assert any("class token dropped" in line for line in lines)
    # A gray image repeated over three channels gives the 1-channel model's patch tokens.
    gray = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        a = model.backbone.model.patch_embed(gray.repeat(1, 3, 1, 1)).flatten(1, 2)
        b = source.patch_embed(gray)
    assert torch.allclose(a, b, atol=1e-5)


def test_weights_of_another_architecture_stop_with_the_keys(tmp_path):
    path, _ = timm_file(tmp_path, "vit_small_patch16_224", **VIT)  # 384 wide, not 192
    model = SimCLR(backbone="vit_tiny", backbone_kwargs=VIT, init_from=str(path),
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    with pytest.raises(ConfigError) as e:
        model.prepare_init()
    message = str(e.value)
    assert "does not fit the backbone" in message and "init_strict: false" in message
    assert (
        "blocks.0.attn.proj.weight 384x384 vs 192x192" in message and "of another shape" in message
    )
    lenient = SimCLR(backbone="vit_tiny", backbone_kwargs={**VIT, "depth": 3}, init_strict=False,
                     init_from=str(timm_file(tmp_path, "vit_tiny_patch16_224", **VIT)[0]),
                     projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    plan = lenient.prepare_init()
    assert any(k.startswith("blocks.2.") for k in plan.adapted.missing)
    assert "missing (start fresh): blocks.2.attn.qkv.weight" in plan.mismatch_report()
    lenient.load_init_weights()  # blocks 0-1 load, block 2 keeps its random weights


def test_unwrap_refuses_what_holds_no_state_dict():
    with pytest.raises(ConfigError, match="no state dict found"):
        unwrap_state_dict({"epoch": 3, "config": {"lr": 1}}, "x.pth")
    state, notes = unwrap_state_dict({"state_dict": {"backbone.w": torch.ones(1),
                                                     "head.w": torch.ones(1)}}, "x.pth")  # fmt: skip
    assert list(state) == ["w"] and notes == ["took the weights under 'state_dict'",
                                              "stripped 'backbone.', dropped 1 key(s) outside it"]  # fmt: skip


def test_plan_init_refuses_a_missing_file_and_an_unknown_timm_model(tmp_path):
    model = timm.create_model("resnet18", num_classes=0)
    with pytest.raises(ConfigError, match="no such file or directory"):
        plan_init(str(tmp_path / "nope.pth"), model)
    with pytest.raises(ConfigError, match="timm has no model"):
        plan_init("timm:resnet_eighteen.a1_in1k", model)


def test_layer_decay_scales_each_blocks_learning_rate():
    model = SimCLR(backbone="vit_tiny", backbone_kwargs=VIT, layer_decay=0.5,
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    groups = model.parameter_groups()
    scale = {id(p): g.get("lr_scale", 1.0) for g in groups for p in g["params"]}
    vit = model.backbone.model
    assert scale[id(vit.blocks[1].mlp.fc1.weight)] == 0.5  # last block: decay^1
    assert scale[id(vit.blocks[0].mlp.fc1.weight)] == 0.25
    assert scale[id(vit.patch_embed.proj.weight)] == 0.125  # embeddings: decay^(L+1)
    assert scale[id(model.projection_head.layers[0].weight)] == 1.0
    assert len(scale) == sum(p.requires_grad for p in model.parameters())  # each once
    with pytest.raises(ConfigError, match="ViT"):
        SimCLR(backbone="resnet18", layer_decay=0.5)


def test_a_frozen_backbone_keeps_its_starting_weights_for_one_epoch_then_trains(tmp_path):
    import pytorch_lightning as pl

    from unit.methods.test_dino import _Data

    path, reference = timm_file(tmp_path, "vit_tiny_patch16_224", img_size=16, patch_size=4,
                                depth=2)  # fmt: skip
    model = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 4, "depth": 2},
                 init_from=str(path), freeze_backbone_epochs=1, projection_hidden_dim=32,
                 bottleneck_dim=16, out_dim=64, base_lr=0.05, optimizer="adamw",
                 weight_decay=0.04, freeze_last_layer_epochs=0, warmup_epochs=0)  # fmt: skip
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    seen = []

    class Watch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            state = pl_module.backbone.model.state_dict()
            teacher = pl_module.teacher_backbone.model.state_dict()
            head = pl_module.head.mlp[0].weight.detach().clone()
            seen.append((all(torch.equal(state[k], start[k]) for k in start),
                         all(torch.equal(teacher[k], start[k]) for k in start), head))  # fmt: skip

    head0 = model.head.mlp[0].weight.detach().clone()
    trainer = pl.Trainer(max_epochs=2, callbacks=[Watch()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=_Data())
    (frozen0, teacher0, head_a), (frozen1, _, _) = seen
    assert frozen0 and teacher0  # epoch 0: the backbone (and its teacher) as they started
    assert not torch.equal(head_a, head0)  # while the head trains
    assert not frozen1  # epoch 1: the backbone trains
