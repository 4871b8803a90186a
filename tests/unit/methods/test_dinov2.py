"""DINOv2: the whole loss against its terms rebuilt independently (timm's own token path,
the centres, Sinkhorn-Knopp), registers and a DINOv2-layout checkpoint through init_from,
per-module clipping, the Gram teacher's refresh, and one-line refusals."""

import pytest
import pytorch_lightning as pl
import timm
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from selfsup.errors import ConfigError
from selfsup.losses import gram_loss, ibot_patch_loss, koleo_loss, sinkhorn_knopp
from selfsup.methods import DINOv2

OUT = 48
REG4 = "vit_small_patch14_reg4_dinov2"


def tiny(**kwargs) -> DINOv2:
    torch.manual_seed(0)
    defaults = dict(
        backbone=REG4,
        backbone_kwargs={"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2},
        projection_hidden_dim=32, bottleneck_dim=16, out_dim=OUT, optimizer="adamw",
        base_lr=1e-3, warmup_epochs=0,
    )  # fmt: skip
    return DINOv2(**{**defaults, **kwargs})


def crops(batch: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(batch, 3, 8, 8, generator=g) for _ in range(2)
    ]


def some_masks(n: int, patches: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, patches, generator=g) < 0.35
    masks[::2] = False  # half the crops unmasked, as DINOv2's probability 0.5
    masks[1, :5] = True
    return masks


def timm_tokens(backbone, x, masks=None, mask_token=None):
    """timm's forward_features with the masked patch embeddings replaced first (DINOv2's
    prepare_tokens_with_masks): an independent path to the student's tokens."""
    vit = backbone.model
    t = vit.patch_embed(x)  # (B, h, w, D)
    if masks is not None:
        t = torch.where(masks.reshape(t.shape[:3]).unsqueeze(-1), mask_token, t)
    t = vit.norm_pre(vit.patch_drop(vit._pos_embed(t)))
    return vit.norm(vit.blocks(t))


def naive_dino(teacher_probs, student, s_temp=0.1):
    total, pairs = 0.0, 0
    for i, p_t in enumerate(teacher_probs):
        for j, s in enumerate(student):
            if i != j:
                total += float(
                    -(p_t.double() * torch.log_softmax(s.double() / s_temp, -1)).sum(-1).mean()
                )
                pairs += 1
    return total / pairs


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "centering": "sinkhorn_knopp",
            "separate_ibot_head": True,
            "ibot_out_dim": 40,
            "gram_weight": 2.0,
        },
    ],
)
def test_the_loss_is_dino_plus_ibot_plus_koleo_plus_gram_rebuilt_from_timm(options):
    model = tiny(**options).eval()  # no drop path
    model.mask_token.data.normal_()
    if model.gram_teacher is not None:  # an anchor that differs from the student
        for p in model.gram_teacher.parameters():
            p.data.add_(torch.randn_like(p) * 0.05)
    c_cls, c_patch = torch.randn(OUT) * 0.1, torch.randn(model.patch_criterion.center.numel()) * 0.1
    model.criterion.center.copy_(c_cls.reshape(1, 1, -1))
    model.patch_criterion.center.copy_(c_patch.reshape(1, 1, -1))
    views, masks, temp = crops(), some_masks(8), 0.05
    g = torch.cat(views[:2])
    with torch.no_grad():
        t = timm_tokens(model.teacher_backbone, g)
        s = timm_tokens(model.backbone, g, masks, model.mask_token)
        s_local = timm_tokens(model.backbone, torch.cat(views[2:]))[:, 0]
        t_cls = model.teacher_head(t[:, 0])
        t_patch = getattr(model, "teacher_ibot_head", model.teacher_head)(t[:, 5:][masks])
        s_cls = model.head(torch.cat([s[:, 0], s_local])).chunk(4)
        s_patch = getattr(model, "ibot_head", model.head)(s[:, 5:][masks])
        if options.get("centering") == "sinkhorn_knopp":
            p_cls, p_patch = sinkhorn_knopp(t_cls, temp), sinkhorn_knopp(t_patch, temp)
        else:
            p_cls, p_patch = (
                torch.softmax((t_cls - c_cls) / temp, -1),
                torch.softmax((t_patch - c_patch) / temp, -1),
            )
        expected = naive_dino(p_cls.chunk(2), s_cls)
        expected += float(ibot_patch_loss(p_patch, s_patch, masks))
        expected += 0.1 * sum(float(koleo_loss(c)) for c in s[:, 0].chunk(2))
        if model.gram_teacher is not None:
            anchor = timm_tokens(model.gram_teacher, g)[:, 5:]
            expected += 2.0 * float(gram_loss(s[:, 5:], anchor))
        loss, terms, _ = model.dinov2_loss(views, masks, temp)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert {"dino_loss", "ibot_loss", "koleo_loss"} <= terms.keys()
    assert ("gram_loss" in terms) == (model.gram_teacher is not None)
    if options.get("centering") == "sinkhorn_knopp":  # no centre moves
        assert torch.equal(model.criterion.center.flatten(), c_cls)
    else:  # each centre moves towards its own teacher outputs: class tokens, masked patches
        assert torch.allclose(
            model.criterion.center.flatten(), 0.9 * c_cls + 0.1 * t_cls.mean(0), atol=1e-6
        )
        assert torch.allclose(
            model.patch_criterion.center.flatten(), 0.9 * c_patch + 0.1 * t_patch.mean(0), atol=1e-6
        )


def test_unmasked_student_tokens_are_timms_and_the_mask_token_reaches_the_loss():
    model = tiny().eval()
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(
        model.backbone.encode_patches(x), model.backbone.model.forward_features(x), atol=1e-6
    )
    loss, _, _ = model.dinov2_loss(crops(), some_masks(8), 0.05)
    loss.backward()
    assert model.mask_token.grad.abs().sum() > 0
    assert model.backbone.num_prefix_tokens == 5  # class token + 4 registers


@pytest.fixture(scope="module")
def dinov2_file(tmp_path_factory):
    """timm's vit_small_patch14_reg4_dinov2 (518 px, 37 x 37 grid) with random weights:
    the stand-in for a released DINOv2 checkpoint (nothing is downloaded here)."""
    torch.manual_seed(5)
    model = timm.create_model(REG4, pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "dinov2_vits14_reg4.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_a_dinov2_layout_checkpoint_loads_whole_and_every_teacher_starts_equal(dinov2_file):
    model = DINOv2(backbone=REG4, backbone_kwargs={"img_size": 28, "in_chans": 1}, out_dim=OUT,
                   projection_hidden_dim=32, bottleneck_dim=16, gram_weight=1.0,
                   init_from=str(dinov2_file))  # fmt: skip
    plan = model.prepare_init()
    assert (
        plan.adapted.missing == [] and plan.adapted.unexpected == [] and plan.adapted.shapes == []
    )
    text = "\n".join(plan.lines())
    assert "37x37 to a 2x2 patch grid" in text and "3 -> 1 input channel(s)" in text
    model.load_init_weights()
    student = model.backbone.state_dict()
    source = timm.create_model(REG4, pretrained=False)
    assert {k.removeprefix("model.") for k in student} == set(source.state_dict())
    for other in (model.teacher_backbone, model.gram_teacher):
        assert all(torch.equal(v, student[k]) for k, v in other.state_dict().items())
    released = load_file(str(dinov2_file))
    for key in ("reg_token", "cls_token", "blocks.11.ls2.gamma", "blocks.0.attn.qkv.weight"):
        assert torch.equal(student[f"model.{key}"], released[key]), key


def test_gradients_are_clipped_to_norm_3_per_module_and_last_layers_frozen_in_epoch_0():
    model = tiny(separate_ibot_head=True, clip_grad=3.0)
    model.trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False)  # epoch 0
    loss, _, _ = model.dinov2_loss(crops(), some_masks(8), 0.05)
    (loss * 1e3).backward()  # large gradients, so every module's norm is above 3
    model.on_before_optimizer_step(torch.optim.SGD(model.parameters(), lr=0.1))
    for module in (model.backbone, model.head, model.ibot_head):
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None])
        )
        assert norm.item() == pytest.approx(3.0, rel=1e-4)
    assert all(
        p.grad is None for h in (model.head, model.ibot_head) for p in h.last_layer.parameters()
    )


class MultiCrop(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return [torch.randn(3, 16, 16, generator=g) for _ in range(2)] + [
            torch.randn(3, 8, 8, generator=g)
        ], 0


@pytest.mark.parametrize("every", [0, 1])
def test_the_gram_teacher_stays_the_start_or_follows_the_ema_teacher(every, tmp_path):
    model = tiny(gram_weight=1.0, gram_update_every=every, teacher_momentum=0.9)
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loader = DataLoader(MultiCrop(), batch_size=4, collate_fn=model.train_collate_fn())
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    trainer.fit(model, loader)
    gram, teacher = model.gram_teacher.state_dict(), model.teacher_backbone.state_dict()
    weight = "model.blocks.0.attn.qkv.weight"
    assert not torch.equal(teacher[weight], start[weight])  # the teacher moved
    reference = teacher if every else start
    assert all(torch.equal(v, reference[k]) for k, v in gram.items())


def test_refusals_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="needs a ViT with a class token"):
        DINOv2(backbone="resnet18", out_dim=OUT, projection_hidden_dim=32, bottleneck_dim=16)
    with pytest.raises(ConfigError, match="separate_ibot_head"):
        tiny(ibot_out_dim=OUT + 1)
    with pytest.raises(ConfigError, match="centering"):
        tiny(centering="softmax")
    model = tiny()
    with pytest.raises(ConfigError, match="carry no patch masks"):
        model.training_step((crops(), torch.zeros(4)), 0)
