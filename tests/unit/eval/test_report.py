"""The evaluators' report files: ssl/selfsup/eval/report.py."""

from pathlib import Path

import pytest

from selfsup.eval.report import _curve_name, write_report

CURVE = [{"fraction": f, "metric": "top1", "mean": 0.5 + f / 4, "std": 0.01} for f in (0.1, 1.0)]


@pytest.mark.parametrize(
    ("checkpoint", "name"),
    [
        ("runs/simclr/quickstart/checkpoints/last.ckpt", "quickstart"),
        ("/abs/runs/dino_small/checkpoints/epoch=3-step=40.ckpt", "dino_small"),
        ("/abs/runs/byol_r50/hpc_ckpt_2.ckpt", "byol_r50"),  # Lightning's pre-emption file
        ("/abs/exports/simclr_r18.safetensors", "simclr_r18"),  # an export keeps its stem
        ("/abs/weights/resnet18_timm.ckpt", "resnet18_timm"),
    ],
)
def test_a_label_curve_is_named_after_the_run_not_its_last_ckpt(checkpoint, name):
    assert _curve_name({"task": "probe", "checkpoint": checkpoint}) == name


def test_a_run_checkpoint_given_from_inside_the_run_is_named_after_the_run(tmp_path, monkeypatch):
    run = tmp_path / "my_run"
    (run / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(run)
    assert _curve_name({"checkpoint": "checkpoints/last.ckpt"}) == "my_run"


def test_without_a_checkpoint_the_curve_is_named_after_the_task():
    assert _curve_name({"task": "probe"}) == "probe"


def test_the_probe_figure_carries_the_runs_name(tmp_path, monkeypatch):
    import selfsup.eval.report as report

    drawn = {}
    monkeypatch.setattr(report, "save_label_curves", lambda curves, path: drawn.update(curves))
    result = {"task": "probe", "checkpoint": str(tmp_path / "sim" / "checkpoints" / "last.ckpt"),
              "label_curve": CURVE}  # fmt: skip
    line = write_report(result, ["a", "b"], tmp_path / "eval")
    assert list(drawn) == ["sim"]
    assert Path(line["eval_dir"]) == tmp_path / "eval"
