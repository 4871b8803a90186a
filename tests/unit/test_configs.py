"""Every YAML under configs/ parses and instantiates through the pretraining CLI."""

from pathlib import Path

import pytest

from conftest import REPO
from selfsup.methods.base import SelfSupervisedMethod
from selfsup.train.run import build_pretrain_cli

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
def test_eval_config_parses_for_its_command(config, capsys):
    """Every key of an evaluation config is an option of its command and takes the file's
    value (--print_config shows what the command would run with)."""
    import yaml

    from selfsup.cli import main

    command = Path(config).stem.split("_")[0]  # knn, probe, finetune(_vit|_resnet)
    with pytest.raises(SystemExit) as done:
        main([command, "--config", str(REPO / config), "--ckpt", "C", "--data", "D",
              "--print_config"])  # fmt: skip
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    file = yaml.safe_load((REPO / config).read_text())
    for key, value in file.items():
        assert printed[key] == value, key
    assert printed["ckpt"] == "C" and printed["data"] == "D"


def test_eval_config_with_an_unknown_key_is_refused(tmp_path, capsys):
    from selfsup.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    assert main(["probe", "--config", str(bad), "--ckpt", "C", "--data", "D"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "learning_rate" in err
