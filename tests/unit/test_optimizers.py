"""selfsup's LARS against its closed form: trust ratio, clipping, weight decay 0, exclusions."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from conftest import TwoViews
from selfsup.errors import ConfigError
from selfsup.methods import SimCLR
from selfsup.optimizers import LARS

W = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # |w| = 5
G = torch.tensor([[0.0, 0.6], [0.8, 0.0]])  # |g| = 1


def one_step(lr=0.5, wd=0.0, eta=0.02, clip=False, adapt=True, momentum=0.9):
    w = W.clone().requires_grad_(True)
    w.grad = G.clone()
    group = {"params": [w], "weight_decay": wd, "lars_adapt": adapt}
    opt = LARS([group], lr=lr, momentum=momentum, trust_coefficient=eta, clip=clip)
    opt.step()
    return w.detach(), opt


def closed_form(lr, wd, eta, clip):
    """Eq. 6 of You et al. (2017): the layer's rate is lr x r with r = eta |w| / (|g| +
    wd |w|); with solo-learn's clipping it is min(r, lr)."""
    r = eta * 5.0 / (1.0 + wd * 5.0)
    local = min(r, lr) if clip else lr * r
    return W - local * (G + wd * W)  # the first momentum step is the step itself


@pytest.mark.parametrize("wd", [0.0, 1e-4, 0.5])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("lr", [0.05, 2.0])  # r = 0.1 at wd 0: the clip binds at lr 2.0
def test_one_step_is_the_closed_form(lr, wd, clip):
    w, _ = one_step(lr=lr, wd=wd, eta=0.02, clip=clip)
    assert torch.allclose(w, closed_form(lr, wd, 0.02, clip), atol=1e-6)


def test_clipping_caps_the_layer_rate_at_the_global_rate():
    # r = eta |w| / |g| = 0.1. Clipped, the layer's rate is min(r, lr): r itself below
    # the global rate, the global rate above it. Unclipped, it is lr x r.
    assert torch.allclose(one_step(lr=2.0, clip=True)[0], W - 0.1 * G, atol=1e-6)
    assert torch.allclose(one_step(lr=0.05, clip=True)[0], W - 0.05 * G, atol=1e-6)
    assert torch.allclose(one_step(lr=2.0, clip=False)[0], W - 0.2 * G, atol=1e-6)


def test_weight_decay_zero_still_adapts():
    # lightly's LARS took a plain SGD step here (W - lr G): adaptation followed the
    # weight decay; here it follows the group.
    w, _ = one_step(lr=2.0, wd=0.0, eta=0.02)
    assert torch.allclose(w, W - 2.0 * 0.1 * G, atol=1e-6)
    assert not torch.allclose(w, W - 2.0 * G)


def test_groups_without_adaptation_take_plain_sgd_steps():
    w, _ = one_step(lr=0.5, wd=0.0, adapt=False, clip=True)
    assert torch.allclose(w, W - 0.5 * G, atol=1e-6)


def test_momentum_accumulates_the_scaled_updates():
    w, opt = one_step(lr=2.0, eta=0.02, momentum=0.9)
    first = W - w  # lr x d1, with d1 = 0.05 G
    p = opt.param_groups[0]["params"][0]
    p.grad = G.clone()
    before = p.detach().clone()
    opt.step()
    d2 = 0.02 * before.norm() / 1.0 * G
    assert torch.allclose(before - p.detach(), 2.0 * (0.9 * first / 2.0 + d2), atol=1e-6)


def test_zero_norms_leave_the_step_unscaled():
    w = torch.zeros(2, 2, requires_grad=True)
    w.grad = G.clone()
    LARS([w], lr=0.5, momentum=0.0, trust_coefficient=0.02, clip=True).step()
    assert torch.allclose(w.detach(), -0.5 * G)


def test_the_first_warmup_step_at_lr_0_is_finite():
    w, _ = one_step(lr=0.0, clip=True)
    assert torch.equal(w, W)


def test_equals_lightly_where_lightly_is_right():
    """With weight decay > 0 and no clipping, lightly's LARS (Eq. 6) is the reference."""
    from lightly.utils.lars import LARS as LightlyLARS

    torch.manual_seed(0)
    a = torch.randn(8, 4, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours = LARS([{"params": [a], "weight_decay": 1e-3}], lr=0.3, trust_coefficient=0.02)
    theirs = LightlyLARS([b], lr=0.3, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.02)
    for _ in range(3):
        grad = torch.randn(8, 4)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_a_state_saved_by_lightlys_lars_loads_and_steps():
    from lightly.utils.lars import LARS as LightlyLARS

    def groups(w):
        return [{"params": [w], "weight_decay": 1e-4, "decayed": True}]

    a, b = W.clone().requires_grad_(True), W.clone().requires_grad_(True)
    a.grad = b.grad = G.clone()
    old = LightlyLARS(groups(a), lr=0.5, momentum=0.9)
    old.step()
    ours = LARS(groups(b), lr=0.5)
    ours.load_state_dict(copy.deepcopy(old.state_dict()))  # not sharing the momentum buffer
    assert ours.param_groups[0]["lars_adapt"] and not ours.param_groups[0]["clip"]
    b.data.copy_(a.data)
    a.grad, b.grad = G.clone(), G.clone()
    old.step()
    ours.step()
    assert torch.allclose(a, b, atol=1e-6)


# -- through a method ----------------------------------------------------------------------


class _Data(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(TwoViews(), batch_size=4, drop_last=True)


def tiny_simclr(**kwargs) -> SimCLR:
    return SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True},
                  projection_hidden_dim=16, projection_dim=8, warmup_epochs=0, **kwargs)  # fmt: skip


def test_a_method_builds_lars_from_its_options(tmp_path):
    model = tiny_simclr(optimizer="lars", weight_decay=0.0, lars_trust_coefficient=0.02,
                        lars_clip=True)  # fmt: skip
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=_Data())
    opt = trainer.optimizers[0]
    assert isinstance(opt, LARS)
    adapted = {id(p) for g in opt.param_groups if g["lars_adapt"] for p in g["params"]}
    assert all(g["trust_coefficient"] == 0.02 and g["clip"] for g in opt.param_groups)
    for name, p in model.named_parameters():
        # conv and linear weights adapted; BatchNorm weights and every bias not
        assert (id(p) in adapted) == (p.ndim > 1), name
    assert adapted  # weight decay 0 does not switch adaptation off


def test_a_trust_coefficient_must_be_positive():
    with pytest.raises(ConfigError, match="positive"):
        tiny_simclr(optimizer="lars", lars_trust_coefficient=0.0)
