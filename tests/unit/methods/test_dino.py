"""DINO: the loss against the paper's formula, the centre, multi-crop, and its training rules."""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.methods import DINO
from selfsup.transforms import DINOTransform

OUT = 64


def tiny_dino(**kwargs) -> DINO:
    torch.manual_seed(0)
    defaults = dict(
        backbone="vit_tiny",
        backbone_kwargs={"img_size": 16, "patch_size": 4},
        projection_hidden_dim=32,
        bottleneck_dim=16,
        out_dim=OUT,
        optimizer="adamw",
        base_lr=1e-3,
        warmup_epochs=0,
    )
    return DINO(**{**defaults, **kwargs})


def views(batch: int = 3, n_local: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    globals_ = [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)]
    return globals_ + [torch.randn(batch, 3, 8, 8, generator=g) for _ in range(n_local)]


def naive_dino_loss(teacher, student, centre, t_temp, s_temp):
    """Algorithm 1 of the paper as loops: H(P_t(x_i), P_s(x_j)) over every teacher
    global view i and student view j != i, averaged over pairs and images."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            for b in range(len(t)):
                p_t = torch.softmax((t[b].double() - centre.double()) / t_temp, dim=0)
                log_p_s = torch.log_softmax(s[b].double() / s_temp, dim=0)
                total += float(-(p_t * log_p_s).sum())
            pairs += 1
    return total / (pairs * len(teacher[0]))


@pytest.mark.parametrize("n_local", [0, 2])
def test_loss_matches_the_paper_loop_with_centring_and_sharpening(n_local):
    model = tiny_dino()
    model.backbone.eval(), model.teacher_backbone.eval()  # no dropout / drop path
    x = views(n_local=n_local)
    centre = torch.randn(OUT) * 0.1
    model.criterion.center.copy_(centre.reshape(1, 1, -1))
    with torch.no_grad():  # the pieces, view by view
        teacher = [model.teacher_head(model.teacher_backbone(v)) for v in x[:2]]
        student = [model.head(model.backbone(v)) for v in x]
    loss, stats, _ = model.dino_loss(x, teacher_temp=0.04)
    assert loss.item() == pytest.approx(
        naive_dino_loss(teacher, student, centre, 0.04, 0.1), rel=1e-5
    )
    # Centre: momentum 0.9 towards the teacher's batch mean over both global views.
    expected = 0.9 * centre + 0.1 * torch.cat(teacher).mean(0)
    assert torch.allclose(model.criterion.center.flatten(), expected, atol=1e-6)
    assert model.criterion.center.dtype == torch.float32
    # The logged KL is the mean KL(P_t || P_s) over the same pairs.
    kl, n = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i != j:
                p_t = torch.softmax((t.double() - centre.double()) / 0.04, dim=1)
                log_p_s = torch.log_softmax(s.double() / 0.1, dim=1)
                kl += float((p_t * (torch.log(p_t.clamp_min(1e-300)) - log_p_s)).sum(1).mean())
                n += 1
    assert float(stats["student_teacher_kl"]) == pytest.approx(kl / n, rel=1e-4, abs=1e-6)


def test_uniform_outputs_give_ln_k_and_are_called_collapse():
    model = tiny_dino()
    flat = [torch.zeros(4, OUT) for _ in range(2)]
    loss = model.criterion(flat, [*flat, torch.zeros(4, OUT)], teacher_temp=0.04)
    assert loss.item() == pytest.approx(math.log(OUT), rel=1e-6)  # closed form: H(uniform) = ln K
    symptom = model.collapse_symptom({"teacher_entropy": math.log(OUT), "student_teacher_kl": 0.0})
    assert symptom is not None and "uniform" in symptom
    one_hot = model.collapse_symptom({"teacher_entropy": 0.01, "student_teacher_kl": 0.0})
    assert one_hot is not None and "one prototype" in one_hot
    assert model.collapse_symptom({"teacher_entropy": 2.0, "student_teacher_kl": 0.5}) is None
    # Near uniform, as a collapsed run on real data reads (99.97 % of ln K, KL 0.002) ...
    near = {"teacher_entropy": 0.9997 * math.log(OUT), "student_teacher_kl": 0.002}
    assert "uniform" in model.collapse_symptom(near)
    # ... but not while the student still learns from a flat teacher, nor below 99 %.
    assert model.collapse_symptom({**near, "student_teacher_kl": 0.15}) is None
    flatter = {"teacher_entropy": 0.98 * math.log(OUT), "student_teacher_kl": 0.002}
    assert model.collapse_symptom(flatter) is None
    assert "uniform" in model.collapse_symptom({**flatter, "student_teacher_kl": 1e-4})


def test_one_backbone_pass_per_crop_size_and_teacher_sees_globals_only():
    model = tiny_dino()
    calls = {"student": [], "teacher": []}
    model.backbone.register_forward_hook(lambda m, i, o: calls["student"].append(tuple(i[0].shape)))
    model.teacher_backbone.register_forward_hook(
        lambda m, i, o: calls["teacher"].append(tuple(i[0].shape))
    )
    model.dino_loss(views(batch=3, n_local=4), teacher_temp=0.04)
    assert calls["student"] == [(6, 3, 16, 16), (12, 3, 8, 8)]
    assert calls["teacher"] == [(6, 3, 16, 16)]


def test_multi_crop_transform_views():
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    t = DINOTransform(size=32, local_size=16, n_local=3, blur_prob=(1.0, 0.1, 0.5))
    out = t(image)
    assert [v.shape[-1] for v in out] == [32, 32, 16, 16, 16] == t.view_sizes
    assert all(v.dtype == torch.float32 for v in out)
    assert len(DINOTransform(size=32, local_size=16, n_local=0)(image)) == 2


def test_teacher_head_is_an_exact_frozen_copy_with_weight_norm():
    model = tiny_dino(norm_last_layer=True)
    for ps, pt in zip(model.head.parameters(), model.teacher_head.parameters(), strict=True):
        assert torch.equal(ps, pt) and not pt.requires_grad
    magnitude = model.head.last_layer.parametrizations.weight.original0
    assert torch.all(magnitude == 1) and not magnitude.requires_grad
    assert tiny_dino(
        norm_last_layer=False
    ).head.last_layer.parametrizations.weight.original0.requires_grad


def test_gradients_are_clipped_per_parameter():
    model = tiny_dino(clip_grad=3.0, freeze_last_layer_epochs=0)
    g = torch.Generator().manual_seed(1)
    originals = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=g) * (
                10.0 if "model.blocks.0" in name else 1e-3
            )
            originals[name] = p.grad.clone()
    model.on_before_optimizer_step(torch.optim.SGD(model.parameters(), lr=0.1))
    for name, p in model.named_parameters():
        if name in originals:
            g0 = originals[name]
            expected = g0 * min(1.0, 3.0 / (g0.norm().item() + 1e-6))  # reference clip_gradients
            assert torch.allclose(p.grad, expected, rtol=1e-5, atol=1e-9), name
    assert model.backbone.model.blocks[0].attn.qkv.weight.grad.norm().item() == pytest.approx(
        3.0, rel=1e-4
    )


class MultiCrop(Dataset):
    def __init__(self, n: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.g = torch.randn(n, 2, 3, 16, 16, generator=g)
        self.l = torch.randn(n, 2, 3, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.g)

    def __getitem__(self, i):
        return [self.g[i, 0], self.g[i, 1], self.l[i, 0], self.l[i, 1]], 0


class _Data(pl.LightningDataModule):
    batch_size = 4

    def train_dataloader(self):
        return DataLoader(MultiCrop(), batch_size=self.batch_size, drop_last=True)


class Record(pl.Callback):
    def __init__(self) -> None:
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        opt = trainer.optimizers[0]
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "last_layer": pl_module.head.last_layer.parametrizations.weight.original1.detach().clone(),
                "block": pl_module.backbone.model.blocks[0].mlp.fc1.weight.detach().clone(),
                "wd": next(g["weight_decay"] for g in opt.param_groups if g["decayed"]),
                "teacher_temp": pl_module.teacher_temperature(),
            }
        )


def test_last_layer_frozen_in_epoch_0_and_schedules_follow_the_recipe(tmp_path):
    model = tiny_dino(
        weight_decay=0.04,
        weight_decay_end=0.4,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        warmup_teacher_temp_epochs=1,
        freeze_last_layer_epochs=1,
    )
    initial_last = model.head.last_layer.parametrizations.weight.original1.detach().clone()
    record = Record()
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[record], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=_Data())
    rows = record.rows
    assert len(rows) == 6 and [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]
    epoch0 = [r for r in rows if r["epoch"] == 0]
    assert all(torch.equal(r["last_layer"], initial_last) for r in epoch0)
    assert not torch.equal(rows[-1]["last_layer"], initial_last)  # it trains from epoch 1
    assert not torch.equal(epoch0[-1]["block"], rows[0]["block"])  # the rest trains in epoch 0
    # Weight decay: cosine 0.04 -> 0.4 over the 6 steps, set before each step.
    for step, r in enumerate(rows):
        expected = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * step / 6))
        assert r["wd"] == pytest.approx(expected)
    # Teacher temperature: linear 0.04 -> 0.07 over epoch 0 (3 steps), then held.
    # Recorded after each step, so row k shows the value for step k + 1.
    temps = [r["teacher_temp"] for r in rows]
    assert temps == pytest.approx([0.05, 0.06, 0.07, 0.07, 0.07, 0.07])


def test_teacher_has_no_stochastic_depth_and_logits_are_fp32_under_bf16():
    model = tiny_dino(backbone_kwargs={"img_size": 16, "patch_size": 4, "drop_path_rate": 0.5})
    model.train()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.teacher_backbone(x), model.teacher_backbone(x))
        assert not torch.equal(model.backbone(x), model.backbone(x))  # the student keeps it
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.head(model.backbone(x))
    assert logits.dtype == torch.float32
