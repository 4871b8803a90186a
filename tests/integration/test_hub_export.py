"""Export in timm's hub format: plain timm (no selfsup) loads the folder offline with strict
keys and gives selfsup's features; refusals are one line; the model card reads the run."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from selfsup.checkpoints import load_backbone
from selfsup.checkpoints.hub import export_hub, model_card
from selfsup.cli import main
from selfsup.errors import ConfigError
from selfsup.methods import BYOL, DINO, SimCLR

#: Run by a separate interpreter that imports timm and torch only: create_model from the
#: folder, its features on the saved inputs, what it read back, and whether the folder's
#: weights file and the model agree key for key (load_state_dict with strict=True).
TIMM_ONLY = r"""
import logging, sys, torch, timm
from timm.models import load_state_dict
folder, inputs, out = sys.argv[1:]
records = []
handler = logging.Handler()
handler.emit = records.append
logging.getLogger("timm").addHandler(handler)
logging.getLogger("timm").setLevel(logging.INFO)
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
with torch.no_grad():
    feats = model(torch.load(inputs))
weights = load_state_dict(f"{folder}/model.safetensors")
model.load_state_dict(weights, strict=True)
state = model.state_dict()
torch.save({
    "feats": feats,
    "same_weights": all(torch.equal(state[k], v) for k, v in weights.items()),
    "cfg": {k: model.pretrained_cfg.get(k) for k in ("mean", "std", "input_size", "crop_pct")},
    "data_config": timm.data.resolve_data_config({}, model=model),
    "log": [r.getMessage() for r in records],
    "selfsup_imported": any(m.split(".")[0] == "selfsup" for m in sys.modules),
}, out)
"""


def save_checkpoint(model, path, mean, std, image_size=None, **extra):
    """What a run saves; mean, std and image size are the data transform's."""
    meta = {**model.checkpoint_metadata(), "mean": mean, "std": std}
    meta["image_size"] = image_size or meta["image_size"]
    torch.save({"state_dict": model.state_dict(), "selfsup": meta, **extra}, path)
    return path


def in_plain_timm(folder, x, tmp_path):
    torch.save(x, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", TIMM_ONLY, str(folder), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "timm.pt")], check=True, env=env, cwd=tmp_path)  # fmt: skip
    return torch.load(tmp_path / "timm.pt")


def perturb_student(model):
    """Teacher != student, so which one was exported shows in the features."""
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))


CASES = {
    # DINO evaluates (and exports) its teacher; BYOL its online network (the student).
    "dino-vit": (lambda: DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 4,
                 "in_chans": 1, "depth": 2}, projection_hidden_dim=32, bottleneck_dim=16, out_dim=64),
                 [0.5], [0.25], (1, 32, 32), 1.0, "teacher"),
    "byol-resnet18": (lambda: BYOL(backbone="resnet18", projection_hidden_dim=32, projection_dim=16,
                      prediction_hidden_dim=32), [0.4, 0.45, 0.5], [0.2, 0.25, 0.3], (3, 96, 96),
                      0.875, "student"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_timm_loads_the_folder_strictly_with_selfsups_features(tmp_path, case):
    make, mean, std, shape, crop_pct, expected_weights = CASES[case]
    torch.manual_seed(0)
    model = make()
    perturb_student(model)
    ckpt = save_checkpoint(model, tmp_path / "m.ckpt", mean, std, image_size=shape[-1])
    out = tmp_path / "hub"
    result = export_hub(ckpt, out)
    assert result["format"] == "timm-hub" and result["dir"] == str(out)
    assert sorted(result["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == sorted(result["files"])
    assert result["weights"] == expected_weights

    x = torch.randn(3, *shape)
    got = in_plain_timm(out, x, tmp_path)
    assert not got["selfsup_imported"] and got["same_weights"]
    assert not [m for m in got["log"] if "keys" in m.lower() or "random init" in m], got["log"]
    with torch.no_grad():
        expected = load_backbone(ckpt).backbone(x)
        evaluated = getattr(model, f"{'teacher_' if expected_weights == 'teacher' else ''}backbone")
        other = getattr(model, f"{'' if expected_weights == 'teacher' else 'teacher_'}backbone")
        assert torch.allclose(evaluated.eval()(x), expected, atol=1e-6)
        assert not torch.allclose(other.eval()(x), expected, atol=1e-3)
    assert got["feats"].shape == expected.shape
    assert torch.allclose(got["feats"], expected, atol=1e-5)
    assert list(got["cfg"]["mean"]) == mean and list(got["cfg"]["std"]) == std
    assert tuple(got["cfg"]["input_size"]) == shape
    # What timm's transform factory is handed: the eval view's size, normalisation, crop.
    data = got["data_config"]
    assert tuple(data["input_size"]) == shape and list(data["mean"]) == mean
    assert data["crop_pct"] == crop_pct and data["interpolation"] == "bilinear"
    assert crop_pct == load_backbone(ckpt).eval_transform().crop_ratio


def test_the_exported_architecture_args_reach_timm(tmp_path):
    torch.manual_seed(0)
    model = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 48, "patch_size": 8, "depth": 3,
                 "embed_dim": 96, "num_heads": 2, "class_token": False, "pool": "avg"},
                 projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    ckpt = save_checkpoint(model, tmp_path / "m.ckpt", [0.5] * 3, [0.5] * 3)
    export_hub(ckpt, tmp_path / "hub")
    args = json.loads((tmp_path / "hub" / "config.json").read_text())["model_args"]
    assert args["patch_size"] == 8 and args["depth"] == 3 and args["embed_dim"] == 96
    assert args["num_heads"] == 2 and args["class_token"] is False
    assert args["global_pool"] == "avg" and args["num_classes"] == 0
    x = torch.randn(2, 3, 48, 48)
    got = in_plain_timm(tmp_path / "hub", x, tmp_path)
    with torch.no_grad():
        assert torch.allclose(got["feats"], model.teacher_backbone.eval()(x), atol=1e-5)


def cli_error(capsys, *argv):
    assert main(["export", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_refusals_are_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    cifar = SimCLR(backbone="resnet18", backbone_kwargs={"cifar_stem": True},
                   projection_hidden_dim=32, projection_dim=16)  # fmt: skip
    ckpt = save_checkpoint(cifar, tmp_path / "cifar.ckpt", [0.5] * 3, [0.5] * 3)
    err = cli_error(capsys, "--ckpt", ckpt, "--out", tmp_path / "hub", "--format", "timm-hub")
    assert "CIFAR stem" in err and "--format safetensors" in err and "load_export" in err
    assert not (tmp_path / "hub").exists()

    vit = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 8, "depth": 1},
               projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    ckpt = save_checkpoint(vit, tmp_path / "vit.ckpt", [0.5] * 3, [0.5] * 3)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    err = cli_error(capsys, "--ckpt", ckpt, "--out", other, "--format", "timm-hub")
    assert "non-empty directory" in err and "not a selfsup hub export" in err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]

    err = cli_error(
        capsys, "--ckpt", ckpt, "--out", tmp_path / "b.safetensors", "--push_to_hub", "o/n"
    )
    assert "--format timm-hub" in err
    err = cli_error(capsys, "--ckpt", ckpt, "--out", tmp_path / "h", "--format", "timm-hub",
                    "--push_to_hub", "not a repo")  # fmt: skip
    assert "not a Hugging Face repo id" in err and not (tmp_path / "h").exists()

    # A previous export is overwritten; the JSON line names the format, folder and files.
    hub = tmp_path / "hub"
    for _ in range(2):
        assert main(["export", "--ckpt", str(ckpt), "--out", str(hub), "--format", "timm-hub"]) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["format"] == "timm-hub" and line["dir"] == str(hub)
        assert sorted(line["files"]) == ["README.md", "config.json", "model.safetensors"]


def test_push_without_the_hub_fails_in_one_line_after_writing_the_folder(tmp_path):
    torch.manual_seed(0)
    vit = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 8, "depth": 1},
               projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    ckpt = save_checkpoint(vit, tmp_path / "vit.ckpt", [0.5] * 3, [0.5] * 3)
    hub = tmp_path / "hub"
    # huggingface_hub reads HF_HUB_OFFLINE when imported: a fresh process, refused at once.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "selfsup.cli", "export", "--ckpt", str(ckpt),
                           "--out", str(hub), "--format", "timm-hub", "--push_to_hub", "org/name"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert "--push_to_hub org/name: the upload failed" in err and "offline" in err
    assert (hub / "config.json").is_file() and "hf upload org/name" in err


def test_model_card_reads_the_run_directory(tmp_path):
    torch.manual_seed(0)
    model = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 8, "depth": 1},
                 projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    init = {"source": "timm:vit_tiny_patch16_224", "sha256": "ab12" * 16}
    meta = {**model.checkpoint_metadata(), "mean": [0.5] * 3, "std": [0.5] * 3, "init_from": init}
    torch.save({"state_dict": model.state_dict(), "selfsup": meta, "global_step": 1234, "epoch": 9},
               run / "checkpoints" / "last.ckpt")  # fmt: skip
    config = {"model": {"class_path": "selfsup.methods.DINO"}, "data": {"path": "/data/cxr.npz"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for name, metrics in {
        "probe-x": {"task": "probe", "top1": 0.5, "headline": {"metric": "macro_auroc", "value": 0.8125}},
        "knn-y": {"task": "knn", "top1": 0.625},  # no headline: top1
    }.items():  # fmt: skip
        (run / "eval" / name).mkdir(parents=True)
        (run / "eval" / name / "metrics.json").write_text(json.dumps(metrics))
    export_hub(run, tmp_path / "hub")
    card = (tmp_path / "hub" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "timm" and "dino" in front["tags"]
    assert "| probe-x | probe | macro_auroc | 0.8125 |" in card
    assert "| knn-y | knn | top1 | 0.6250 |" in card
    assert "/data/cxr.npz" in card and "1234 steps, epoch 9" in card
    assert "timm:vit_tiny_patch16_224" in card and "ab12" * 16 in card
    assert "DINO" in card and "teacher weights" in card and "vit_tiny_patch16_224" in card
    assert 'timm.create_model("hf-hub:ORG/NAME", pretrained=True)' in card and "local-dir:" in card
    named = model_card(load_backbone(run), tmp_path / "hub", "org/cxr-dino")
    assert 'timm.create_model("hf-hub:org/cxr-dino", pretrained=True)' in named
    assert "class_path: selfsup.methods.DINO" in card  # the run's config, in a collapsed block
    with pytest.raises(ConfigError, match="not a selfsup hub export"):
        export_hub(run, run)  # the run directory itself is no place for the folder


def test_a_hub_folder_is_a_ckpt_for_every_command(tmp_path, capsys):
    """What init_from takes, --ckpt takes: selfsup's own hub export rebuilds the backbone it
    came from (same features, weights and normalisation), and a folder that timm's own
    save_for_hf wrote loads as its architecture at its input size; kNN runs on it."""
    import numpy as np
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    vit = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 8, "depth": 2},
               projection_hidden_dim=32, bottleneck_dim=16, out_dim=64)  # fmt: skip
    ckpt = save_checkpoint(vit, tmp_path / "vit.ckpt", [0.4] * 3, [0.2] * 3)
    export_hub(ckpt, tmp_path / "hub")
    direct, from_hub = load_backbone(ckpt), load_backbone(tmp_path / "hub")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(direct.backbone(x), from_hub.backbone(x), atol=1e-6)
    assert from_hub.mean == [0.4] * 3 and from_hub.meta["image_size"] == 32
    assert from_hub.meta["loaded"] == direct.meta["loaded"] == "teacher"

    plain = timm.create_model("resnet18", num_classes=0, in_chans=1).eval()
    save_for_hf(plain, str(tmp_path / "timm_hub"), model_args={"in_chans": 1},
                data_config={"input_size": (1, 48, 48), "mean": (0.5,), "std": (0.25,)})  # fmt: skip
    loaded = load_backbone(f"local-dir:{tmp_path / 'timm_hub'}")
    y = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(loaded.backbone(y), plain(y), atol=1e-5)
    assert loaded.meta["image_size"] == 48 and loaded.mean == [0.5]

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(40) % 2, x_test=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(20) % 2)  # fmt: skip
    argv = ["knn", "--ckpt", str(tmp_path / "hub"), "--data.path", str(data), "--k", "[5]",
            "--data.num_workers", "0", "--cache", "false", "--out", str(tmp_path / "knn")]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task"] == "knn"


def test_a_hub_folder_without_an_architecture_is_one_line(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="names no architecture"):
        load_backbone(tmp_path)
