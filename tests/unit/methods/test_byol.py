"""BYOL: the loss against its formula, the EMA teacher, and accumulation."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.losses import negative_cosine_loss
from selfsup.methods import BYOL


def test_negative_cosine_matches_normalised_mse_of_the_paper():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    naive = (
        sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(7)) / 7
    )  # Eq. 2: || p/|p| - z/|z| ||^2
    assert negative_cosine_loss(p, z).item() == pytest.approx(naive, rel=1e-5)
    assert negative_cosine_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine_loss(p, -p).item() == pytest.approx(4.0, rel=1e-6)


def tiny_byol(**kwargs) -> BYOL:
    return BYOL(
        backbone="resnet18",
        backbone_kwargs={"cifar_stem": True},
        projection_hidden_dim=32,
        projection_dim=16,
        prediction_hidden_dim=32,
        optimizer="sgd",
        base_lr=0.5,
        warmup_epochs=0,
        **kwargs,
    )


def test_teacher_starts_as_an_exact_frozen_copy():
    model = tiny_byol()
    for s, t in [
        (model.backbone, model.teacher_backbone),
        (model.projection_head, model.teacher_projection_head),
    ]:
        for ps, pt in zip(s.parameters(), t.parameters(), strict=True):
            assert torch.equal(ps, pt) and not pt.requires_grad and ps.data_ptr() != pt.data_ptr()
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_update_is_the_ema_formula():
    model = tiny_byol()
    before = [p.clone() for p in model.teacher_backbone.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model.update_teacher(0.9)
    for pt, old, ps in zip(
        model.teacher_backbone.parameters(), before, model.backbone.parameters(), strict=True
    ):
        assert torch.allclose(pt, 0.9 * old + 0.1 * ps, atol=1e-6)


class TwoViews(Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 3, 16, 16, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return [self.x[i, 0], self.x[i, 1]], 0


class _Data(pl.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(TwoViews(), batch_size=self.batch_size, drop_last=True)


class TeacherMoves(pl.Callback):
    """Counts how often the teacher's weights changed between micro-batches.

    Callbacks' batch-end hooks run before the module's, so changes are observed at
    the next batch's start and at the end of training.
    """

    def __init__(self) -> None:
        self.moves = 0
        self.last = None

    def _observe(self, pl_module) -> None:
        now = torch.cat([p.flatten() for p in pl_module.teacher_backbone.parameters()]).clone()
        if self.last is not None and not torch.equal(now, self.last):
            self.moves += 1
        self.last = now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._observe(pl_module)

    def on_train_end(self, trainer, pl_module):
        self._observe(pl_module)


@pytest.mark.parametrize("batch_size,accumulate", [(8, 1), (4, 2)])
def test_teacher_moves_once_per_optimizer_step(batch_size, accumulate, tmp_path):
    torch.manual_seed(0)
    model = tiny_byol(teacher_momentum=0.9)
    moves = TeacherMoves()
    trainer = pl.Trainer(
        max_steps=3,
        accumulate_grad_batches=accumulate,
        callbacks=[moves],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=_Data(batch_size))
    assert trainer.global_step == 3
    assert moves.moves == 3  # one move per optimizer step, not per micro-batch


def test_bf16_true_is_refused_for_ema_teachers(tmp_path):
    from conftest import REPO
    from selfsup.errors import ConfigError
    from selfsup.train.run import build_pretrain_cli

    cli = build_pretrain_cli(
        [
            "--config",
            str(REPO / "configs/byol/resnet18_cifar.yaml"),
            "--trainer.precision",
            "bf16-true",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--data.path",
            "patterns",
            "--data.batch_size",
            "8",
        ]
    )
    with pytest.raises(ConfigError, match="bf16-mixed"):
        cli.check_run()
