"""benchmarks/quality.py's variants of a config (``--before REV``, ``--set KEY=VALUE``):
how a variant is named, paired with today's config and written back as the command
that reruns it, and that a bad ``--set`` stops with one line before any data loads.
The study's parts live in benchmarks/lib (imported here as the scripts import it)."""

from __future__ import annotations

import hashlib
import importlib
import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture
def bench(monkeypatch):
    """``bench("lib.records")``: a module of benchmarks/lib (or a study script), imported
    as the scripts import it, with benchmarks/ on the path."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module


@pytest.fixture
def variants_in(bench, monkeypatch):
    """``variants_in(repo)``: lib.render_variants reading the git history of ``repo``
    (its caches of git's answers emptied before and after)."""
    module = bench("lib.render_variants")

    def clear() -> None:
        module.commit_time.cache_clear()
        module._committed_as.cache_clear()

    def at(repo):
        monkeypatch.setattr(module, "REPO", repo)
        clear()
        return module

    yield at
    clear()


def record(run: str, seed: int, knn: float, steps: int, **extra) -> dict:
    return {"run": run, "side": "selfsup", "method": run.split("/")[1].split("[")[0].split("@")[0],
            "seed": seed, "budget_min": 10.0, "tag": "t", "steps": steps, "batch": 64,
            "final": {"knn": knn}, "points": 3, "threads": 2, **extra}  # fmt: skip


def test_variant_names_split_into_todays_run_and_the_variant(bench):
    variant_of = bench("lib.records").variant_of
    assert variant_of("selfsup/simclr") == ("selfsup/simclr", "")
    assert variant_of("lightly/byol") == ("lightly/byol", "")
    assert variant_of("selfsup/simclr@6ad51ce^") == ("selfsup/simclr", "@6ad51ce^")
    assert variant_of("selfsup/simclr_small[lars_clip=false]") == (
        "selfsup/simclr_small", "[lars_clip=false]")  # fmt: skip
    assert variant_of("selfsup/dino@abc[a=1,b=x.y]") == ("selfsup/dino", "@abc[a=1,b=x.y]")


def test_a_set_variant_is_paired_seed_by_seed_and_its_command_reruns_it(bench):
    variants, render = bench("lib.render_variants"), bench("lib.render")
    sets = {"model.init_args.lars_trust_coefficient": "0.001", "model.init_args.lars_clip": "false"}
    name = "selfsup/simclr_small[lars_trust_coefficient=0.001,lars_clip=false]"
    rs = [record("selfsup/simclr_small", 0, 0.344, 106), record("selfsup/simclr_small", 1, 0.350, 110),
          record(name, 0, 0.370, 106, set=sets, matched_steps=True),
          record(name, 1, 0.362, 110, set=sets, matched_steps=True)]  # fmt: skip
    lines = variants.before_after(rs, ["simclr_small"])
    row = next(line for line in lines if line.startswith(f"| {name} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "selfsup/simclr_small"
    assert cells[2] == "34.7 ± 0.4 (n=2)" and cells[3] == "36.6 ± 0.6 (n=2)"
    # today - variant: seed 0 34.4 - 37.0 = -2.6, seed 1 35.0 - 36.2 = -1.2, mean -1.9
    assert cells[4] == "**-1.9** (seed 0: -2.6; seed 1: -1.2)"
    assert cells[5] == "108 x 64 / 108 x 64"
    line = render.command(rs, ["simclr_small"])
    today, variant = line.split("`, `")
    assert today.endswith("--runs selfsup/simclr_small") and "--set" not in today
    assert variant.rstrip("`").endswith(
        "--set model.init_args.lars_trust_coefficient=0.001 model.init_args.lars_clip=false "
        "--match-steps --runs selfsup/simclr_small"
    )


def test_a_revision_variant_keeps_its_before_flag(bench):
    variants, render = bench("lib.render_variants"), bench("lib.render")
    rs = [record("selfsup/byol", 0, 0.313, 26),
          record("selfsup/byol@6ad51ce^", 0, 0.340, 26, config_rev="6ad51ce^", matched_steps=True)]  # fmt: skip
    line = render.command(rs, ["byol"])
    assert line.endswith("--before 6ad51ce^ --match-steps --runs selfsup/byol`")
    row = variants.before_after(rs, ["byol"])[-2]
    assert row.startswith(
        "| selfsup/byol@6ad51ce^ | selfsup/byol | 31.3 (n=1) | 34.0 (n=1) | **-2.7** (seed 0: -2.7)"
    )


def git(folder, *args: str, date: str | None = None) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"]}  # fmt: skip
    if date:
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True)


def test_without_a_run_of_todays_config_a_revision_is_held_against_the_next_later_one(
    tmp_path, variants_in
):
    # three commits with known dates; their order, not their names, decides the pairs
    git(tmp_path, "init", "-q")
    for day in (1, 2, 3):
        git(tmp_path, "commit", "-q", "--allow-empty", "-m", str(day),
            date=f"2026-01-0{day}T00:00:00+00:00")  # fmt: skip
    q = variants_in(tmp_path)
    oldest, middle, newest = "selfsup/byol@HEAD~2", "selfsup/byol@HEAD~1", "selfsup/byol@HEAD"
    names = {oldest, middle, newest, f"{middle}[lars_clip=false]", "selfsup/dino@HEAD~1"}
    assert q.partner(oldest, names) == middle  # the next later revision, not the newest
    assert q.partner(middle, names) == newest
    assert q.partner(newest, names) is None  # nothing later: it is the after side
    assert q.partner(f"{middle}[lars_clip=false]", names) == middle  # the set is the change
    assert q.partner("selfsup/dino@HEAD~1", names) is None  # only runs of its own config
    # once today's config has a run in the group, every revision is held against it
    assert q.partner(oldest, names | {"selfsup/byol"}) == "selfsup/byol"
    rs = [record(oldest, 0, 0.340, 22), record(middle, 0, 0.313, 26), record(newest, 0, 0.320, 26)]
    rows = [line for line in q.before_after(rs, ["byol"]) if line.startswith("| selfsup/")]
    assert rows[0].startswith(f"| {middle} | {newest} | 32.0 (n=1) | 31.3 (n=1) | **+0.7**")
    assert rows[1].startswith(f"| {oldest} | {middle} | 31.3 (n=1) | 34.0 (n=1) | **-2.7**")


def quality(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks/quality.py"), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_bad_set_stops_with_one_line_before_the_data_loads(tmp_path):
    records = tmp_path / "runs.json"
    typo = quality("--runs", "selfsup/simclr_small", "--set",
                   "model.init_args.lars_trust_coefficent=0.001", "--records", str(records))  # fmt: skip
    assert typo.returncode == 2, typo.stderr
    lines = typo.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quality: --set for selfsup/simclr_small: ")
    assert "lars_trust_coefficent" in lines[0]
    no_value = quality("--runs", "selfsup/simclr", "--set", "model.init_args.lars_clip",
                       "--records", str(records))  # fmt: skip
    assert no_value.returncode == 2
    assert no_value.stderr.strip() == (
        "quality: --set takes KEY=VALUE, got 'model.init_args.lars_clip': "
        "e.g. --set model.init_args.lars_clip=false"
    )
    unmatched = quality("--runs", "selfsup/simclr", "--set", "model.init_args.lars_clip=false",
                        "--match-steps", "--tag", "none-such", "--records", str(records))  # fmt: skip
    assert unmatched.returncode == 2
    assert "no recorded run of selfsup/simclr seed 0 at 10 min, tag none-such" in unmatched.stderr
    lightly_only = quality("--runs", "lightly/simclr", "--set", "model.init_args.lars_clip=false",
                           "--records", str(records))  # fmt: skip
    assert lightly_only.returncode == 2 and "no selfsup/ run is given" in lightly_only.stderr
    assert not records.exists()  # nothing ran, nothing was recorded


def test_a_set_value_the_shell_would_split_is_quoted_in_the_command(bench):
    render = bench("lib.render")
    sets = {"model.init_args.backbone_kwargs": '{"cifar_stem":true,"zero_init_last":false}'}
    name = 'selfsup/simclr[backbone_kwargs={"cifar_stem":true,"zero_init_last":false}]'
    rs = [record("selfsup/simclr", 0, 0.33, 37), record(name, 0, 0.34, 37, set=sets)]
    variant = render.command(rs, ["simclr"]).split("`, `")[1].rstrip("`")
    flag = variant.split("--set ", 1)[1].split(" --runs")[0]
    assert shlex.split(flag) == [
        f"model.init_args.backbone_kwargs={sets['model.init_args.backbone_kwargs']}"
    ]
    assert variant.endswith("--runs selfsup/simclr")  # not matched: no --match-steps


def test_a_record_fingerprints_the_config_text_and_the_set_options(bench, monkeypatch, tmp_path):
    selfsup_side = bench("lib.selfsup_side")
    fingerprint = selfsup_side.config_fingerprint
    assert fingerprint("simclr_small", None, None) == fingerprint("simclr_small", None, {})
    assert fingerprint("simclr_small", None, None) != fingerprint("simclr", None, None)
    clip = {"model.init_args.lars_clip": "false"}
    assert fingerprint("simclr_small", None, clip) != fingerprint("simclr_small", None, None)
    # an edited config is another fingerprint: the same method, its file changed
    edited = tmp_path / "configs/simclr/resnet18_small.yaml"
    edited.parent.mkdir(parents=True)
    text = (REPO / "configs/simclr/resnet18_small.yaml").read_text()
    edited.write_text(text.replace("temperature: 0.2", "temperature: 0.1"))
    before = fingerprint("simclr_small", None, None)
    monkeypatch.setattr(selfsup_side, "REPO", tmp_path)
    assert fingerprint("simclr_small", None, None) != before
    edited.write_text(text)
    assert fingerprint("simclr_small", None, None) == before


def test_a_run_is_held_against_the_random_init_backbone_it_started_from(bench):
    import yaml

    quality_data = bench("lib.quality_data")
    selfsup_overrides = quality_data.selfsup_overrides
    q = bench("lib.render_pneumonia")

    def pneumonia_record(run: str, cfg: dict) -> dict:
        return {"run": run, "overrides": selfsup_overrides(cfg, 28)}

    today = yaml.safe_load((REPO / "configs/simclr/resnet18_cifar.yaml").read_text())
    assert today["model"]["init_args"]["backbone_kwargs"]["zero_init_last"] is False
    assert q.untrained_twin(pneumonia_record("selfsup/simclr", today)) == (
        "random-init ResNet-18, zero_init_last false")  # fmt: skip
    timm_start = today  # the config as at 8d4562e^: timm's zero-initialised last BatchNorm
    timm_start["model"]["init_args"]["backbone_kwargs"] = {"cifar_stem": True}
    assert q.untrained_twin(pneumonia_record("selfsup/simclr@8d4562e^", timm_start)) == (
        "random-init ResNet-18")  # fmt: skip
    assert q.untrained_twin({"run": "lightly/simclr"}) == quality_data.LIGHTLY_RANDOM_INIT
    assert q.untrained_twin({"run": "selfsup/ijepa"}) == "random-init ViT-Tiny/2 (ijepa)"
    assert q.untrained_twin({"run": "selfsup/mae"}) == "random-init ViT-Tiny/4 (mae)"
    # every name it gives is a baseline quality --baselines records
    methods = {method for method, _ in quality_data.UNTRAINED_GRAY.values()}
    assert {"random-init ResNet-18", "random-init ResNet-18, zero_init_last false",
            "random-init ViT-Tiny/2 (ijepa)", "random-init ViT-Tiny/4 (mae)"} <= methods  # fmt: skip


def test_a_set_of_backbone_kwargs_on_gray_images_keeps_one_input_channel(bench):
    import yaml

    from selfsup.train.run import build_pretrain_cli

    gray_run, set_flags = bench("lib.selfsup_side").gray_run, bench("lib.selfsup_side").set_flags

    config = REPO / "configs/simclr/resnet18_small.yaml"
    cfg = yaml.safe_load(config.read_text())
    sets = {"model.init_args.backbone_kwargs": '{"cifar_stem": true, "zero_init_last": true}',
            "model.init_args.lars_clip": "false"}  # fmt: skip
    overrides, rest = gray_run(cfg, 28, sets)
    assert rest == {"model.init_args.lars_clip": "false"}
    assert "zero_init_last" in sets["model.init_args.backbone_kwargs"]  # the caller's kept
    # what jsonargparse resolves from the argv selfsup_side builds
    cli = build_pretrain_cli(["--config", str(config), *overrides, *set_flags(rest)],
                             resolve_only=True)  # fmt: skip
    init = cli.config["model"]["init_args"]
    assert dict(init["backbone_kwargs"]) == {"cifar_stem": True, "zero_init_last": True,
                                             "in_chans": 1}  # fmt: skip
    assert init["lars_clip"] is False
    # the report reads the start it trained from the recorded overrides
    assert (
        bench("lib.render_pneumonia").untrained_twin(
            {"run": "selfsup/simclr_small[backbone_kwargs=…]", "overrides": overrides}
        )
        == "random-init ResNet-18"
    )


def test_a_run_of_an_edited_config_is_named_with_the_version_it_trained(tmp_path, variants_in):
    # a config committed in three versions; each record keeps the fingerprint of the text
    # it trained, and git's own history says which commit that text stood before
    git(tmp_path, "init", "-q")
    config = tmp_path / "configs/simclr/resnet18_cifar.yaml"
    config.parent.mkdir(parents=True)
    commits = []
    for lr in ("0.3", "0.4", "0.5"):
        config.write_text(f"model:\n  base_lr: {lr}\n")
        git(tmp_path, "add", "-A")
        git(tmp_path, "commit", "-q", "-m", lr)
        commits.append(subprocess.run(["git", "log", "-1", "--format=%h"], cwd=tmp_path,
                                      capture_output=True, text=True).stdout.strip())  # fmt: skip
    q = variants_in(tmp_path)

    def ran(lr: str, **extra) -> dict:
        sha = hashlib.sha256(f"model:\n  base_lr: {lr}\n{{}}".encode()).hexdigest()[:12]
        return record("selfsup/simclr", 0, 0.4, 10, config="configs/simclr/resnet18_cifar.yaml",
                      config_sha=sha, **extra)  # fmt: skip

    assert q.config_as_at(ran("0.3")) == f"{commits[1]}^"  # the text the 2nd commit replaced
    assert q.config_as_at(ran("0.4")) == f"{commits[2]}^"
    assert q.config_as_at(ran("0.5")) is None  # today's config
    assert q.config_as_at(ran("0.6")) == q.UNCOMMITTED
    assert q.config_as_at(ran("0.3", config_rev="HEAD~2")) is None  # its name says it
    config.write_text("model:\n  base_lr: 0.6\n")  # edited since the last commit
    assert q.config_as_at(ran("0.5")) == commits[2]
    assert q.config_as_at(ran("0.6")) is None
    unnamed = record("selfsup/byol", 0, 0.3, 10, machine="2026-12-02, a CPU")  # no fingerprint
    lines = q.config_line([ran("0.3"), ran("0.6"), unnamed])
    assert lines[2].endswith("(the configs committed then): selfsup/byol (2026-12-02).")
    assert lines[0].endswith(f"selfsup/simclr as at {commits[1]}^ (e.g. `git show "
                             f"{commits[1]}^:configs/simclr/resnet18_cifar.yaml`).")  # fmt: skip
    assert q.config_line([ran("0.6")]) == []


def test_baselines_add_only_the_unrecorded_ones_and_both_resnet_starts(bench, monkeypatch):
    import torch

    runs, quality_data = bench("lib.runs"), bench("lib.quality_data")
    untrained_twin = bench("lib.render_pneumonia").untrained_twin

    seen = []

    def fake_evaluate(net, data, mean, std, probe=False, knn=True):
        seen.append(net)
        return {"knn": 0.5}

    monkeypatch.setattr(runs, "evaluate", fake_evaluate)
    recorded = {"baseline/raw_pixels", "baseline/random_init_resnet18",
                "baseline/random_init_resnet18_bnstats", "baseline/random_init_vit_tiny4"}  # fmt: skip
    data = {"x_train": torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)}
    out = runs.baselines(data, quality_data.DATASETS["cifar"], recorded)
    assert [(r["run"], r["seed"]) for r in out] == [
        ("baseline/random_init_resnet18_tv", 0),
        ("baseline/random_init_resnet18_tv", 1),
        ("baseline/random_init_resnet18_tv_bnstats", 0),
        ("baseline/random_init_resnet18_tv_bnstats", 1),
    ]
    # torchvision's start: each residual block's last BatchNorm scale starts at 1, where
    # timm's default (the other ResNet baseline) starts it at 0
    last_bn = [m.weight for name, m in seen[0].named_modules() if name.endswith("bn2")]
    assert len(last_bn) == 8 and all(bool((w == 1).all()) for w in last_bn)
    assert out[0]["method"] == untrained_twin(
        {
            "run": "selfsup/simclr",
            "overrides": [
                "--model.init_args.backbone_kwargs",
                '{"cifar_stem": true, "zero_init_last": false}',
            ],
        }
    )
    # the same network twice: BatchNorm's initial statistics, then the data's
    bns = [[m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)] for net in seen]
    assert all(bool((bn.running_var == 1).all()) for bn in bns[0])
    assert not any(bool((bn.running_var == 1).all()) for bn in bns[2])
    assert not seen[2].training
    assert out[2]["method"] == out[0]["method"] + quality_data.BN_OF_DATA
    seen.clear()
    assert (
        runs.baselines({}, quality_data.DATASETS["cifar"], {r["run"] for r in out} | recorded) == []
    )
    assert seen == []
    # PneumoniaMNIST: each ResNet start, lightly's included, also with the data's statistics
    gray = {"x_train": torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)}
    plain = {"raw_pixels", "random_init_resnet18", "random_init_resnet18_no_zero_init",
             "random_init_vit_tiny4", "random_init_vit_tiny2", "random_init_lightly_resnet18"}  # fmt: skip
    out = runs.baselines(gray, quality_data.DATASETS["pneumonia"], {f"baseline/{r}" for r in plain})
    bn_of_data = quality_data.BN_OF_DATA
    assert sorted({(r["run"], r["method"]) for r in out}) == [
        ("baseline/random_init_lightly_resnet18_bnstats",
         quality_data.LIGHTLY_RANDOM_INIT + bn_of_data),
        ("baseline/random_init_resnet18_bnstats", "random-init ResNet-18" + bn_of_data),
        ("baseline/random_init_resnet18_no_zero_init_bnstats",
         "random-init ResNet-18, zero_init_last false" + bn_of_data),
    ]  # fmt: skip
    # the six networks evaluated (lightly's inside the evaluated lambda's default argument)
    nets = [fn if isinstance(fn, torch.nn.Module) else fn.__defaults__[0] for fn in seen[-6:]]
    assert len(nets) == 6 and not any(bool((m.running_var == 1).all()) for net in nets
                                      for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))  # fmt: skip


def test_batchnorm_statistics_of_the_data_are_its_activations_mean_and_variance(bench):
    # the first BatchNorm's input is the stem convolution of the normalised images, whatever
    # the statistics: its running mean and (unbiased) variance must become that input's
    import torch

    from selfsup.backbones import Backbone

    with_data_bn_stats = bench("lib.quality_data").with_data_bn_stats

    torch.manual_seed(0)
    net = Backbone(name="resnet18", img_size=32, cifar_stem=True).eval()
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    x = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        net(x)
    hook.remove()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k}
    assert with_data_bn_stats(net, images, mean, std) is net and not net.training
    act = seen[0].double()
    torch.testing.assert_close(first.running_mean.double(), act.mean((0, 2, 3)),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    torch.testing.assert_close(first.running_var.double(), act.var((0, 2, 3), unbiased=True),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    after = net.state_dict()  # the weights and affine parameters are left as they were
    assert all(torch.equal(after[k], v) for k, v in weights.items() if "num_batches" not in k)


def test_an_eval_backbone_variant_reads_that_backbone_and_its_command_reruns_it(bench):
    import torch

    from selfsup.methods import DINO

    eval_features = bench("lib.selfsup_side").eval_features
    run_name = bench("lib.records").run_name

    assert run_name("selfsup", "dino", None, None, "student") == "selfsup/dino[backbone=student]"
    assert run_name("selfsup", "dino", "abc", {"model.init_args.base_lr": "0.1"}, "student") == (
        "selfsup/dino@abc[base_lr=0.1,backbone=student]")  # fmt: skip
    assert run_name("lightly", "dino", None, None, "student") == "lightly/dino"
    torch.manual_seed(0)
    model = DINO(backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 8, "depth": 1},
                 projection_hidden_dim=32, bottleneck_dim=16, out_dim=64).eval()  # fmt: skip
    with torch.no_grad():  # the student moves away from its teacher, as in training
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        student, teacher = model.backbone(x), model.teacher_backbone(x)
        assert not torch.allclose(student, teacher)
        assert torch.equal(eval_features(None)(model)(x), teacher)  # DINO's own choice
        assert torch.equal(eval_features("teacher")(model)(x), teacher)
        assert torch.equal(eval_features("student")(model)(x), student)
    variants, render = bench("lib.render_variants"), bench("lib.render")
    name = "selfsup/dino[backbone=student]"
    rs = [record("selfsup/dino", 0, 0.80, 96),
          record(name, 0, 0.85, 96, eval_backbone="student", matched_steps=True)]  # fmt: skip
    today, variant = render.command(rs, ["dino"]).split("`, `")
    assert "--eval-backbone" not in today
    assert variant.endswith("--eval-backbone student --match-steps --runs selfsup/dino`")
    row = next(
        line for line in variants.before_after(rs, ["dino"]) if line.startswith(f"| {name} |")
    )
    assert row.startswith(f"| {name} | selfsup/dino | 80.0 (n=1) | 85.0 (n=1) | **-5.0**")


def refusal(*args: str) -> str:
    """The one line ``quality.py args`` stops with (exit status 2)."""
    result = quality(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_an_eval_backbone_a_run_lacks_stops_with_one_line(tmp_path):
    records = str(tmp_path / "runs.json")
    assert refusal(
        "--runs", "selfsup/simclr", "--eval-backbone", "teacher", "--records", records
    ) == (
        "quality: selfsup/simclr has no teacher to evaluate: --eval-backbone teacher is for "
        "byol, dino, ijepa"
    )
    lightly_only = refusal(
        "--runs", "lightly/dino", "--eval-backbone", "student", "--records", records
    )
    assert "no selfsup/ run is given" in lightly_only
    assert not (tmp_path / "runs.json").exists()


def test_seeds_count_within_one_machine_and_tag_not_across_them(bench):
    q = bench("lib.render_pneumonia")
    rs = [record("selfsup/dino", 0, 0.8, 96), record("selfsup/dino", 1, 0.8, 96),
          {**record("selfsup/mae", 0, 0.8, 500), "tag": "a"},
          {**record("selfsup/mae", 1, 0.8, 500), "tag": "b"},
          {**record("selfsup/mae", 1, 0.8, 500), "tag": "b", "budget_min": 30.0}]  # fmt: skip
    assert q.seeds_in_one_group(rs, "selfsup/dino", 10.0) == 2
    assert q.seeds_in_one_group(rs, "selfsup/mae", 10.0) == 1  # seed 0 and 1 on two tags
    assert q.seeds_in_one_group(rs, "selfsup/mae", 30.0) == 1
    assert q.seeds_in_one_group(rs, "selfsup/byol", 10.0) == 0


def test_a_long_variant_name_is_cut_in_figures_only(bench):
    q = bench("lib.render")
    assert q.plot_name("selfsup/dino[backbone=student]") == "selfsup/dino[backbone=student]"
    long = "selfsup/dino[optimizer=lars,base_lr=0.3,weight_decay=1e-6,backbone=student]"
    assert len(q.plot_name(long)) == 44 and q.plot_name(long).endswith("…]")
    assert q.plot_name(long).startswith("selfsup/dino[optimizer=lars,base_lr=0.3")


def test_a_method_without_a_teacher_refuses_to_be_read_on_one():
    from selfsup.errors import ConfigError
    from selfsup.methods import SimCLR

    model = SimCLR(
        backbone="vit_tiny", backbone_kwargs={"img_size": 32, "patch_size": 8, "depth": 1}
    )
    assert model.eval_module("student") is model.backbone is model.eval_module()
    with pytest.raises(ConfigError, match="SimCLR has no teacher"):
        model.eval_module("teacher")
