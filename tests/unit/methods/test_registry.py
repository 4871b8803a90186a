"""The method registry, and what the shared base declares instead of reaching into the
DataModule: the per-process batch size the learning rate scales with."""

import inspect

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from conftest import TwoViews
from selfsup import methods
from selfsup.errors import ConfigError
from selfsup.methods import METHODS, SelfSupervisedMethod, SimCLR, method_class


def test_registry_holds_every_method_class_under_its_own_name():
    assert list(METHODS) == ["SimCLR", "Triplet", "BYOL", "DINO", "DINOv2", "MAE", "IJEPA"]
    for name, cls in METHODS.items():
        assert cls.__name__ == name and getattr(methods, name) is cls
        assert issubclass(cls, SelfSupervisedMethod)
    # Every concrete method the package exports is registered.
    exported = {
        obj
        for obj in vars(methods).values()
        if inspect.isclass(obj)
        and issubclass(obj, SelfSupervisedMethod)
        and obj.__module__ != "selfsup.methods.base"
    }
    assert exported - {methods.TeacherStudentMethod} == set(METHODS.values())


@pytest.mark.parametrize("name", ["DINO", "selfsup.methods.DINO", "selfsup.methods.dino.DINO"])
def test_method_class_takes_a_name_or_a_class_path(name):
    assert method_class(name) is methods.DINO


@pytest.mark.parametrize(
    "name,suggestion",
    [("selfsup.methods.SimCLRR", "SimCLR"), ("dino", "DINO"), ("Ijepa", "IJEPA"), ("BYOl", "BYOL")],
)
def test_unknown_names_are_a_config_error_with_close_matches(name, suggestion):
    with pytest.raises(ConfigError) as error:
        method_class(name)
    message = str(error.value)
    assert f"Unknown method {name!r}" in message
    assert "SimCLR, Triplet, BYOL, DINO, DINOv2, MAE, IJEPA" in message
    assert "selfsup.methods.<Method>" in message and f"Did you mean {suggestion}" in message
    with pytest.raises(ConfigError, match="methods are") as error:
        method_class("Xyzzy")
    assert "Did you mean" not in str(error.value)


def tiny_simclr(**kwargs) -> SimCLR:
    vit = {"img_size": 16, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}
    return SimCLR(backbone="vit_tiny", backbone_kwargs=vit, projection_hidden_dim=16,
                  projection_dim=8, optimizer="sgd", base_lr=0.256, warmup_epochs=0, **kwargs)  # fmt: skip


@pytest.mark.parametrize("batch_size,expected", [(None, 4), (64, 64)])
def test_learning_rate_scales_with_the_declared_or_the_loaders_batch_size(
    batch_size, expected, tmp_path
):
    model = tiny_simclr(batch_size=batch_size)
    assert model.hparams.batch_size == batch_size  # a plain argument, so LightningCLI can link it
    trainer = pl.Trainer(max_steps=1, accumulate_grad_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    # A bare DataLoader, no DataModule: the method reads nothing from one.
    trainer.fit(model, train_dataloaders=DataLoader(TwoViews(), batch_size=4, drop_last=True))
    assert model.global_batch_size() == expected * 2  # x accumulate_grad_batches, x 1 process
    assert model.learning_rate() == pytest.approx(0.256 * expected * 2 / 256)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(
        model.learning_rate()
    )


def test_a_loader_without_batch_size_asks_for_the_argument(tmp_path):
    sampler = torch.utils.data.BatchSampler(range(8), batch_size=4, drop_last=True)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.init_args\.batch_size"):
        trainer.fit(tiny_simclr(), train_dataloaders=DataLoader(TwoViews(), batch_sampler=sampler))
