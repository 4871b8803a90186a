"""Every YAML under configs/ parses and instantiates through the pretraining CLI."""

from pathlib import Path

import pytest

from conftest import REPO
from selfsup.cli import build_pretrain_cli
from selfsup.methods.base import SelfSupervisedMethod

CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert "configs/quickstart.yaml" in CONFIGS
    assert {"configs/simclr/resnet18_cifar.yaml", "configs/simclr/vit_tiny_cifar.yaml"} <= set(
        CONFIGS
    )


@pytest.mark.parametrize("config", CONFIGS)
def test_config_instantiates(config, tmp_path):
    cli = build_pretrain_cli(
        ["--config", str(REPO / config), "--trainer.default_root_dir", str(tmp_path)]
    )
    assert isinstance(cli.model, SelfSupervisedMethod)
    assert cli.datamodule.transform is not None
    assert Path(cli.trainer.default_root_dir) == tmp_path
