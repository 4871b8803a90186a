"""bf16 on a CPU without bf16 kernels: fp32 instead, said in one line; everywhere else as asked."""

import contextlib
import io
import json
import platform
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from selfsup import precision
from selfsup.errors import ConfigError
from selfsup.precision import cpu_has_native_bf16, cpu_precision


def test_native_bf16_matches_the_cpu_flags_linux_reports():
    # oneDNN runs bf16 natively from AVX-512 core (BW, VL, DQ) on, or with AVX512_BF16 / AMX.
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("reads the x86 flags of /proc/cpuinfo")
    flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.M).group(1).split())
    expected = {"avx512bw", "avx512vl", "avx512dq"} <= flags or bool(
        {"avx512_bf16", "amx_bf16"} & flags
    )
    assert cpu_has_native_bf16() is expected


@pytest.mark.parametrize("asked", ["bf16-mixed", "bf16-true", "bf16"])
def test_bf16_on_a_cpu_without_it_becomes_fp32_with_one_line(monkeypatch, asked):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    for accelerator in ("cpu", "auto", None):
        if accelerator != "cpu":
            monkeypatch.setattr(precision, "runs_on_cpu", lambda a: True)
        ran, why = cpu_precision(asked, accelerator)
        assert ran == "32-true"
        assert why.count("\n") == 0 and asked in why and "--trainer.precision 32-true" in why


def test_everything_else_keeps_what_was_asked(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert cpu_precision("bf16-mixed", "cpu") == ("bf16-mixed", None)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert cpu_precision("bf16-mixed", "gpu") == ("bf16-mixed", None)
    assert cpu_precision("bf16-mixed", "cuda") == ("bf16-mixed", None)
    for asked in ("32-true", "32", 32, "16-mixed", "64-true"):
        assert cpu_precision(asked, "cpu") == (asked, None)


def _argv(config: str, data, run) -> list[str]:
    return ["--config", config, "--data.path", str(data), "--trainer.default_root_dir", str(run),
            "--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed",
            "--trainer.max_steps", "1", "--data.batch_size", "16", "--data.num_workers", "0",
            "--model.init_args.projection_hidden_dim", "64",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip


CONFIG = str(REPO / "configs" / "simclr" / "resnet18_cifar.yaml")


@pytest.fixture(scope="module")
def fallback_run(tiny_npz, tmp_path_factory):
    """A bf16-mixed pretraining run on a CPU taken to have no bf16: its directory and stderr."""
    from selfsup.cli import main

    run = tmp_path_factory.mktemp("fallback")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(precision, "cpu_has_native_bf16", lambda: False)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["pretrain", *_argv(CONFIG, tiny_npz, run)]) == 0
    return run, err.getvalue()


def test_pretrain_without_native_bf16_trains_in_fp32_and_records_it(fallback_run):
    run, err = fallback_run
    saved = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"]
    assert saved == "32-true"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    lines = [line for line in err.splitlines() if "native bf16" in line]
    assert len(lines) == 1 and "bf16-mixed runs ~15x slower" in lines[0]


def test_finetune_without_native_bf16_runs_and_reports_fp32(fallback_run, tiny_npz, tmp_path,
                                                            monkeypatch, capsys):  # fmt: skip
    from selfsup.cli import main

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    run, _ = fallback_run
    argv = ["finetune", "--config", str(REPO / "configs" / "eval" / "finetune_resnet.yaml"),
            "--ckpt", str(run), "--data.path", str(tiny_npz), "--epochs", "1", "--data.batch_size", "16",
            "--data.num_workers", "0", "--accelerator", "cpu", "--out", str(tmp_path / "ft")]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["precision"] == "32-true"
    assert "bf16-mixed runs ~15x slower" in captured.err


def test_pretrain_with_native_bf16_keeps_it(tiny_npz, tmp_path, monkeypatch, capsys):
    from selfsup.train.run import build_pretrain_cli

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    cli = build_pretrain_cli(_argv(CONFIG, tiny_npz, tmp_path))
    assert cli.trainer.precision == "bf16-mixed"
    assert "native bf16" not in capsys.readouterr().err


@pytest.mark.parametrize("accelerator", ["auto", "cpu"])
def test_runs_on_cpu_agrees_with_the_accelerator_lightning_picks(accelerator):
    import pytorch_lightning as pl
    from pytorch_lightning.accelerators import CPUAccelerator

    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
    picked = isinstance(trainer.accelerator, CPUAccelerator)
    assert precision.runs_on_cpu(accelerator) is picked
    assert precision.runs_on_cpu(trainer.accelerator) is picked


# -- a config's cpu_fp32 budget: its options for a run in fp32 on a CPU -----------------

QUICKSTART = REPO / "configs" / "quickstart.yaml"
BUDGET = {"trainer.max_epochs": 1, "data.batch_size": 32}


def _with_budget(run, *extra: str):
    """The quickstart with a cpu_fp32 budget, as a second config file gives it."""
    from selfsup.train.run import build_pretrain_cli

    budget = run / "budget.yaml"
    budget.write_text(yaml.safe_dump({"cpu_fp32": BUDGET}))
    return build_pretrain_cli(["--config", str(QUICKSTART), "--config", str(budget),
                               "--trainer.accelerator", "cpu",
                               "--trainer.default_root_dir", str(run), *extra])  # fmt: skip


def _own(config: dict, key: str):
    """A dotted option's value in a YAML file."""
    for part in key.split("."):
        config = config[part]
    return config


def test_a_cpu_without_bf16_trains_the_configs_fp32_budget_and_says_so(
    tmp_path, monkeypatch, capsys
):
    file = yaml.safe_load(QUICKSTART.read_text())
    assert file["trainer"]["precision"] == "bf16-mixed"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    cli = _with_budget(tmp_path)
    assert cli.config.trainer.precision == "32-true"
    for key, value in BUDGET.items():
        assert value != _own(file, key) and cli.config[key] == value
    assert cli.trainer.max_epochs == BUDGET["trainer.max_epochs"]
    # The batch size's link follows the budget: the learning rate scales with it.
    assert cli.model.hparams.batch_size == cli.datamodule.batch_size == BUDGET["data.batch_size"]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "cpu_fp32" in ln]
    assert len(lines) == 1, lines
    for key, value in BUDGET.items():
        assert f"{key} {value} (not {_own(file, key)})" in lines[0]
    # RUN/config.yaml (this dump) holds what ran, and the budget that chose it.
    saved = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    assert saved["trainer"]["precision"] == "32-true"
    assert all(_own(saved, key) == value for key, value in BUDGET.items())
    assert saved["cpu_fp32"] == BUDGET


def test_native_bf16_trains_the_configs_own_values(tmp_path, monkeypatch, capsys):
    file = yaml.safe_load(QUICKSTART.read_text())
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    cli = _with_budget(tmp_path)
    assert cli.config.trainer.precision == "bf16-mixed"
    for key in BUDGET:
        assert cli.config[key] == _own(file, key)
    assert cli.trainer.max_epochs == file["trainer"]["max_epochs"]
    assert "cpu_fp32" not in capsys.readouterr().err


def test_an_option_on_the_command_line_wins_over_the_fp32_budget(monkeypatch):
    from jsonargparse import Namespace

    from selfsup.train.run import cpu_fp32_flags

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)

    def config(precision: str = "bf16-mixed", accelerator: str = "cpu") -> Namespace:
        return Namespace(trainer=Namespace(precision=precision, accelerator=accelerator,
                                           max_epochs=3), data=Namespace(batch_size=128),
                         cpu_fp32=BUDGET)  # fmt: skip

    flags, line = cpu_fp32_flags(config(), ["--trainer.max_epochs", "5"])
    assert flags == ["--data.batch_size", "32"]
    assert "data.batch_size 32 (not 128)" in line and "max_epochs" not in line
    flags, _ = cpu_fp32_flags(config("32-true"), ["--data.batch_size=64"])
    assert flags == ["--trainer.max_epochs", "1"]
    assert cpu_fp32_flags(config(accelerator="gpu"), []) == ([], None)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert cpu_fp32_flags(config(), []) == ([], None)
    typo = config("32-true")
    typo.cpu_fp32 = {"trainer.max_epoch": 1}
    with pytest.raises(ConfigError, match=r"Did you mean trainer\.max_epochs"):
        cpu_fp32_flags(typo, [])


def test_a_resolved_config_leaves_precision_and_budget_to_the_machine_that_runs_it(
    tmp_path, monkeypatch
):
    """`selfsup launch` resolves a config on a login node; the job's node decides."""
    from selfsup.train.run import build_pretrain_cli

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"cpu_fp32": BUDGET}))
    config = build_pretrain_cli(["--config", str(QUICKSTART), "--config", str(budget),
                                 "--trainer.accelerator", "cpu"], resolve_only=True).config  # fmt: skip
    assert config.trainer.precision == "bf16-mixed"
    assert config.trainer.max_epochs == 3 and config.data.batch_size == 128
    assert config.cpu_fp32 == BUDGET  # the job's node applies it
