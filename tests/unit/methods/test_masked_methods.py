"""MAE and I-JEPA: patch-level ViT access, masking, I-JEPA's targets and its loader hook,
and a micro MAE that learns to fill in masked patches (the losses' formulas:
test_losses.py)."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.utils import patchify
from torch.utils.data import DataLoader

from selfsup.backbones import Backbone
from selfsup.errors import ConfigError
from selfsup.masks import random_masking
from selfsup.methods import IJEPA, MAE

MICRO = {"depth": 2, "embed_dim": 64, "num_heads": 4}


@pytest.mark.parametrize("class_token", [True, False])
def test_encode_patches_matches_timm_and_lightly(class_token):
    torch.manual_seed(0)
    kw = {"class_token": class_token, "pool": "cls" if class_token else "avg"}
    b = Backbone("vit_tiny", img_size=32, patch_size=4, **MICRO, **kw).eval()
    for shape in [(2, 3, 32, 32), (2, 3, 24, 40)]:  # the built size, and another one
        x = torch.randn(shape)
        assert torch.allclose(b.encode_patches(x), b.model.forward_features(x), atol=1e-5)
    # A subset of patches against lightly's masked ViT, an independent implementation.
    x = torch.randn(2, 3, 32, 32)
    keep = torch.stack([torch.randperm(64)[:16] for _ in range(2)])
    reference = MaskedVisionTransformerTIMM(
        vit=copy.deepcopy(b.model), weight_initialization="skip", pos_embed_initialization="skip"
    ).eval()
    p = b.num_prefix_tokens
    idx = torch.cat([torch.zeros(2, p, dtype=torch.long), keep + p], 1)
    assert torch.allclose(b.encode_patches(x, keep), reference.encode(x, idx_keep=idx), atol=1e-5)


@pytest.mark.parametrize("n_patches,ratio", [(64, 0.75), (196, 0.75), (10, 1 / 3), (49, 0.6)])
def test_random_masking_keeps_int_l_times_one_minus_ratio(n_patches, ratio):
    g = torch.Generator().manual_seed(0)
    keep, restore = random_masking(8, n_patches, ratio, generator=g)
    assert keep.shape == (8, int(n_patches * (1 - ratio)))
    assert len({tuple(k.tolist()) for k in keep}) == 8  # every sample has its own mask
    assert all(len(set(k.tolist())) == keep.shape[1] for k in keep)
    # `restore` inverts the shuffle whose first K entries are `keep`: tokens laid out
    # as [kept, masked] and put back with `restore` are the input in grid order.
    shuffle = torch.argsort(restore, dim=1)
    assert torch.equal(shuffle[:, : keep.shape[1]], keep)
    tokens = torch.randn(8, n_patches, 5)
    shuffled = tokens.gather(1, shuffle[..., None].expand(-1, -1, 5))
    assert torch.equal(shuffled[:, : keep.shape[1], 0], tokens[torch.arange(8)[:, None], keep, 0])
    assert torch.equal(shuffled.gather(1, restore[..., None].expand(-1, -1, 5)), tokens)


def test_patches_are_read_row_major_with_pixels_then_channels():
    x = torch.randn(2, 3, 8, 8)
    patches = patchify(x, 4)
    naive = torch.stack([x[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(0, 2, 3, 1).flatten(1)
                         for r in range(2) for c in range(2)], 1)  # fmt: skip
    assert torch.equal(patches, naive)


def ramps(n: int, g: torch.Generator, size: int = 16) -> torch.Tensor:
    """Smooth images: per channel a random plane a + b*y + c*x."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    coef = torch.randn(n, 3, 3, generator=g)
    return coef[..., 0, None, None] + coef[..., 1, None, None] * yy + coef[..., 2, None, None] * xx


def test_micro_mae_fills_masked_patches_better_than_the_dataset_mean():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = MAE(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 4, **MICRO},
                decoder_dim=32, decoder_depth=1, decoder_heads=2, norm_pix_loss=False)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    for _ in range(60):
        keep, restore = random_masking(64, model.n_patches, 0.75, generator=g)
        loss = model.mae_step(ramps(64, g), keep, restore)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    position_mean = patchify(ramps(2000, g), 4).mean(0)  # the best guess without context
    x = ramps(256, g)
    keep, restore = random_masking(256, model.n_patches, 0.75, generator=g)
    with torch.no_grad():
        model_error, _, mask = model.mae_step(x, keep, restore)
    target = patchify(x, 4)
    mean_error = (((position_mean - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert model_error.item() < 0.8 * mean_error.item()


def test_mae_reconstruct_keeps_visible_patches_and_fills_the_rest():
    model = MAE(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 4, **MICRO},
                decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    masked, reconstruction, mask = model.reconstruct(x, torch.Generator().manual_seed(0))
    assert masked.shape == reconstruction.shape == x.shape and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [12, 12]
    visible = patchify(x, 4)[mask == 0]
    assert torch.allclose(patchify(reconstruction, 4)[mask == 0], visible)
    assert torch.equal(patchify(masked, 4)[mask == 1], torch.zeros(24, 48))


def tiny_ijepa(**kw) -> IJEPA:
    torch.manual_seed(0)
    vit = {"img_size": 16, "patch_size": 2, "class_token": False, "pool": "avg", **MICRO}
    return IJEPA(backbone="vit_tiny", backbone_kwargs=vit, predictor_dim=32, predictor_depth=1,
                 predictor_heads=2, min_keep=4, **kw)  # fmt: skip


def test_ijepa_targets_are_layer_normed_teacher_tokens_and_the_context_sees_only_its_patches():
    model = tiny_ijepa(loss="l2").eval()
    g = torch.Generator().manual_seed(0)
    context, targets = model.mask_sampler.sample(3, generator=g)
    x = torch.randn(3, 3, 16, 16)
    loss, _ = model.ijepa_loss(x, context, targets)
    # Naive: predictions per target block, compared with the target encoder's
    # layer-normed token at each target position.
    with torch.no_grad():
        full = model.teacher_backbone.encode_patches(x)
        z = model.backbone.encode_patches(x, keep=context)
        total, n = 0.0, 0
        for m in range(targets.shape[1]):
            pred = model.predictor(z, context, [targets[:, m]])
            for b in range(3):
                for k, index in enumerate(targets[b, m].tolist()):
                    t = torch.nn.functional.layer_norm(full[b, index], (full.shape[-1],))
                    total += float(((pred[b, k] - t) ** 2).sum())
                    n += t.numel()
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    # Changing pixels outside the context changes the targets, never the prediction.
    outside = sorted(set(range(64)) - set(context[0].tolist()))[0]
    r, c = divmod(outside, 8)
    y = x.clone()
    y[0, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] += 5.0
    with torch.no_grad():
        z_y = model.backbone.encode_patches(y, keep=context)
    assert torch.allclose(z_y, z, atol=1e-5)
    assert not torch.allclose(model.teacher_backbone.encode_patches(y), full, atol=1e-3)


def test_mae_refuses_a_mask_ratio_without_masked_or_visible_patches():
    for ratio in (0.0, 1.0):
        with pytest.raises(ConfigError, match="mask_ratio"):
            MAE(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 4, **MICRO},
                mask_ratio=ratio)  # fmt: skip


def test_ijepa_refuses_a_class_token_and_other_view_sizes():
    with pytest.raises(ConfigError, match="class_token: false"):
        IJEPA(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 2, **MICRO})
    with pytest.raises(ConfigError, match="img_size: 32"):
        tiny_ijepa().check_view_size(32)


class _Images(torch.utils.data.Dataset):
    """What PretrainDataModule's datasets give a single-view method: ``([view], label)``."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return [torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i))], 0


class _Data(pl.LightningDataModule):
    """A DataModule with PretrainDataModule's `collate_fn` attribute (None = the default)."""

    def __init__(self) -> None:
        super().__init__()
        self.collate_fn = None

    def train_dataloader(self):
        return DataLoader(_Images(), batch_size=4, drop_last=True, collate_fn=self.collate_fn)


def test_ijepa_asks_the_loader_for_its_mask_collator_and_refuses_batches_without_masks(tmp_path):
    model = tiny_ijepa()
    collate = model.train_collate_fn()
    (views, labels), (context, targets) = collate([_Images()[i] for i in range(3)])
    assert views[0].shape == (3, 3, 16, 16) and labels.shape == (3,)
    assert context.shape[0] == 3 and targets.shape[:2] == (3, 4)
    assert MAE(backbone="vit_tiny", backbone_kwargs={"img_size": 16, "patch_size": 4, **MICRO},
               decoder_dim=32, decoder_depth=1, decoder_heads=2).train_collate_fn() is None  # fmt: skip

    def trainer() -> pl.Trainer:
        return pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip

    data = _Data()
    with pytest.raises(ConfigError, match=r"model\.train_collate_fn\(\)"):
        trainer().fit(model, datamodule=data)  # the loader was left with the default collate
    data.collate_fn = model.train_collate_fn()  # what the run assembly does
    run = trainer()
    run.fit(model, datamodule=data)
    assert run.global_step == 2
