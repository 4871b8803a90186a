"""Every YAML under configs/ parses and instantiates through the pretraining CLI, and
configs/README.md's table lists every pretraining config with the values it holds."""

import inspect
import math
import re
from pathlib import Path

import pytest

from conftest import REPO
from selfsup.errors import ConfigError
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
        main([command, "--config", str(REPO / config), "--ckpt", "C", "--data.path", "D",
              "--print_config"])  # fmt: skip
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    file = yaml.safe_load((REPO / config).read_text())
    for key, value in file.items():
        if key == "data":
            assert all(printed["data"][k] == v for k, v in value.items()), value
        else:
            assert printed[key] == value, key
    assert printed["ckpt"] == "C" and printed["data"]["path"] == "D"


def test_eval_config_with_an_unknown_key_is_refused(tmp_path, capsys):
    from selfsup.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    assert main(["probe", "--config", str(bad), "--ckpt", "C", "--data.path", "D"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "learning_rate" in err


def test_sync_batchnorm_in_a_config_is_still_refused_on_cpu(tmp_path):
    """The cluster config asks for SyncBatchNorm; instantiating it on CPU works (the test
    above), but a CPU run stops before training with the one-line fix."""
    cli = build_pretrain_cli(
        ["--config", str(REPO / "configs/byol/resnet50_imagenet.yaml"), "--data.path", "patterns",
         "--data.batch_size", "8", "--trainer.default_root_dir", str(tmp_path)]
    )  # fmt: skip
    assert cli.trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    with pytest.raises(ConfigError, match="sync_batchnorm"):
        cli.check_run()


# -- configs/README.md: the table of every config beside its source -------------------

README = REPO / "configs" / "README.md"
COLUMNS = ["config", "opt", "lr", "wd", "batch", "epochs", "warmup", "loss", "lars", "init",
           "views", "why"]  # fmt: skip


def readme_rows() -> list[dict[str, str]]:
    rows = []
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(COLUMNS) and not set(cells[1]) <= {"-"}:
            rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows[1:]  # the header row


def config_rows() -> dict[str, dict[str, str]]:
    rows = {}
    for row in readme_rows():
        if m := re.fullmatch(r"`(configs/[\w/.-]+\.yaml)`", row["config"]):
            assert m.group(1) not in rows, f"{m.group(1)} listed twice"
            rows[m.group(1)] = row
    return rows


def test_the_readme_lists_every_pretraining_config_beside_a_source():
    rows = readme_rows()
    assert set(config_rows()) == set(CONFIGS)
    for i, row in enumerate(rows):
        if row["config"].startswith("`configs/"):
            assert i + 1 < len(rows) and rows[i + 1]["config"].startswith("↳"), (
                f"{row['config']}: no source row below it"
            )
        else:
            assert row["config"].startswith("↳") and row["why"], row["config"]


def _same(cell: str, value: float | None) -> bool:
    return value is not None and math.isclose(float(cell), float(value), rel_tol=1e-9)


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def _items(cell: str) -> dict[str, str]:
    """``"m 0.99, T 0.04 → 0.07"`` -> ``{"m": "0.99", "T": "0.04 → 0.07"}``."""
    return dict(item.strip().split(" ", 1) if " " in item.strip() else (item.strip(), "")
                for item in cell.split(","))  # fmt: skip


def _jitter(transform: str, t) -> list[float]:
    """The colour jitter a transform applies: its base values times the strength."""
    from selfsup import transforms

    if transform == "SimCLRTransform":
        defaults = inspect.signature(transforms.view_pipeline).parameters
        base = {k: defaults[k].default for k in ("brightness", "contrast", "saturation", "hue")}
    else:
        base = transforms.BYOL_COLOR_JITTER
    s = t.color_jitter_strength
    values = [base["brightness"] * s, base["contrast"] * s]
    return values if t.grayscale else [*values, base["saturation"] * s, min(base["hue"] * s, 0.5)]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_readme_row_holds_the_config_values(config):
    row = config_rows().get(config)
    assert row, f"{config} has no row in configs/README.md"
    c = build_pretrain_cli(["--config", str(REPO / config)], resolve_only=True).config
    m, t = c.model.init_args, c.data.transform.init_args
    transform = c.data.transform.class_path.rsplit(".", 1)[-1]

    opt = row["opt"].split()
    assert opt[0] == m.optimizer, "opt."
    assert "β2" not in opt or _same(opt[opt.index("β2") + 1], m.betas[1]), "opt. β2"
    assert "β2" in opt or m.betas[1] == 0.999, "opt.: AdamW's β2 is not listed"
    assert _same(row["lr"], m.base_lr), "base lr"
    wd = [x.strip() for x in row["wd"].split("→")]
    assert _same(wd[0], m.weight_decay), "wd"
    assert (wd[1:] and _same(wd[1], m.weight_decay_end)) or (
        not wd[1:] and m.weight_decay_end is None
    ), "wd schedule"
    assert _same(row["batch"].split(",")[0], c.data.batch_size), "batch"
    assert ("sync BN" in row["batch"]) == bool(c.trainer.sync_batchnorm), "sync BN"
    assert _same(row["epochs"], c.trainer.max_epochs), "epochs"
    assert _same(row["warmup"], m.warmup_epochs), "warm-up"

    loss = _items(row["loss"])
    expected = {"m": "teacher_momentum", "margin": "margin", "mask": "mask_ratio"}
    for key, name in expected.items():
        assert (key in loss) == (name in m), f"loss · teacher: {key} ({name})"
        if key in loss and isinstance(m[name], (list, tuple)):  # a range: DINOv2's mask ratio
            assert _numbers(loss[key]) == pytest.approx(list(m[name])), f"loss · teacher: {key}"
        else:
            assert key not in loss or _same(loss[key], m[name]), f"loss · teacher: {key}"
    temperature = "temperature" if "temperature" in m else "teacher_temp"
    assert ("T" in loss) == (temperature in m), "loss · teacher: T"
    if "T" in loss:
        *start, end = [x.strip() for x in loss["T"].split("→")]
        assert _same(end, m[temperature]), "T"
        if "warmup_teacher_temp" in m:
            assert _same((start or [end])[0], m.warmup_teacher_temp), "T's warm-up start"

    if m.optimizer == "lars":
        lars = [x.strip() for x in row["lars"].split(",")]
        assert _same(lars[0], m.lars_trust_coefficient), "LARS η"
        assert ("clip" in lars[1:]) == m.lars_clip, "LARS clip"
    else:
        assert row["lars"] == "—", "LARS η, clip: not a LARS config"

    if m.backbone.startswith("resnet"):  # the scale a block's last BatchNorm starts at
        zero = (m.backbone_kwargs or {}).get("zero_init_last", True)
        assert row["init"] == ("0" if zero else "1"), "last BN γ"
    else:
        assert row["init"] == "—", "last BN γ: not a ResNet"

    views = _items(row["views"])
    if "color_jitter_strength" in t and t.color_jitter_prob > 0:
        assert _numbers(views["jitter"]) == pytest.approx(_jitter(transform, t)), "jitter"
    else:
        assert "jitter" not in views
    if "blur_prob" in t:
        blur = t.blur_prob if isinstance(t.blur_prob, (tuple, list)) else [t.blur_prob]
        assert _numbers(views["blur"]) == pytest.approx(list(blur)), "blur"
    scale = t.get("global_scale", t.get("scale"))
    assert _numbers(views["crop"]) == pytest.approx(list(scale)), "crop"
