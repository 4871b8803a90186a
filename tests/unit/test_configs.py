"""Every YAML under configs/ parses and instantiates through the pretraining CLI."""

from pathlib import Path

import pytest

from conftest import REPO
from selfsup.train.run import build_pretrain_cli
from selfsup.methods.base import SelfSupervisedMethod

ALL = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml"))
EVAL_CONFIGS = [c for c in ALL if c.startswith("configs/eval/")]
CONFIGS = [c for c in ALL if c not in EVAL_CONFIGS]  # pretraining configs


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


@pytest.mark.parametrize("config", EVAL_CONFIGS)
def test_eval_config_parses_for_its_command(config, monkeypatch):
    import yaml

    from selfsup import cli

    command = Path(config).stem.split("_")[0]  # knn, probe, finetune(_vit|_resnet)
    parsed = {}
    original = cli._parse_eval_args

    def parse_only(parser, argv):
        parsed.update(vars(original(parser, argv)))
        raise SystemExit(0)

    monkeypatch.setattr(cli, "_parse_eval_args", parse_only)
    with pytest.raises(SystemExit):
        cli.COMMANDS[command](["--config", str(REPO / config), "--ckpt", "C", "--data", "D"])
    for key, value in yaml.safe_load((REPO / config).read_text()).items():
        assert parsed[key.replace("-", "_")] == value, key


def test_eval_config_with_an_unknown_key_is_refused(tmp_path):
    from selfsup import cli
    from selfsup.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        cli.probe(["--config", str(bad), "--ckpt", "C", "--data", "D"])
