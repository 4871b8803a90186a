"""Backbones out in timm's Hugging Face Hub format, with a model card, optionally uploaded.

:func:`export_hub` writes a folder that plain timm loads offline, without selfsup::

    model = timm.create_model("local-dir:DIR", pretrained=True)   # or "hf-hub:ORG/NAME"

- ``config.json`` and ``model.safetensors``, written by timm's own writer
  (:func:`timm.models.save_for_hf`). ``config.json`` names the ``architecture`` and holds
  ``model_args``: the kwargs selfsup built the timm model with (image and patch size,
  channels, depth/width overrides, class token, pooling, ``num_classes: 0``), which
  ``create_model`` passes back to the architecture, so the very same model is rebuilt and
  its weights load with strict key matching. ``pretrained_cfg`` holds the preprocessing of
  selfsup's evaluation view (input size, mean, std, resize and centre crop), which
  ``timm.data.resolve_data_config`` hands to ``timm.data.create_transform``. A ``selfsup``
  entry records where the weights come from (timm ignores it; it also marks the folder as
  an export that a later export may overwrite).
- ``README.md``: the model card (method, backbone, data, steps, the run's config and the
  evaluations found in its run directory).

Only architectures timm builds as they are can go to the hub: a CIFAR-stem ResNet is
selfsup's own surgery and goes to the single-file export (``selfsup.checkpoints.load_export``).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

import selfsup
from selfsup.backbones import Backbone
from selfsup.checkpoints.files import read_checkpoint
from selfsup.checkpoints.loading import LoadedBackbone, load_backbone
from selfsup.errors import ConfigError
from selfsup.run_directory import RunDir

HUB_FORMAT = "selfsup-timm-hub-1"
#: What an export writes, all of it in the folder: timm's weights and config, the card.
HUB_FILES = ("README.md", "config.json", "model.safetensors")
#: Keys of the architecture's default pretrained_cfg that describe the architecture and its
#: input; the rest (tag, license, paper, url) describe timm's own released weights, not these.
_ARCHITECTURE_CFG = ("architecture", "input_size", "fixed_input_size", "min_input_size",
                     "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes",
                     "pool_size", "first_conv", "classifier")  # fmt: skip


def export_hub(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    which: Literal["student", "teacher"] | None = None,
    pool: Literal["cls", "avg"] | None = None,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """Write the backbone of a checkpoint (or run directory) as a timm hub folder ``out``;
    with ``push_to_hub`` (``ORG/NAME``), upload the folder to that Hugging Face model repo."""
    from timm.models import save_for_hf

    out = Path(out)
    if out.suffix == ".safetensors":
        raise ConfigError(
            f"--out {out}: --format timm-hub writes a directory; give a directory name "
            "(or drop --format timm-hub for the single .safetensors file)."
        )
    if push_to_hub is not None:
        _check_repo_id(push_to_hub)
    loaded = load_backbone(ckpt, which, pool)
    backbone = loaded.backbone
    if not backbone.timm_buildable:
        raise ConfigError(
            f"{backbone.name} with a CIFAR stem is selfsup's own architecture, which plain timm "
            "cannot build, so it has no timm hub form: export it with --format safetensors "
            "and load it with selfsup.checkpoints.load_export(FILE)."
        )
    _make_room(out)
    save_for_hf(
        _timm_model(backbone),
        str(out),
        model_args=backbone.timm_kwargs,
        safe_serialization=True,
        data_config=data_config(loaded),
        model_config={"selfsup": _provenance(backbone, loaded)},
    )
    (out / "README.md").write_text(model_card(loaded, out, push_to_hub), encoding="utf-8")
    result = {
        "task": "export",
        "format": "timm-hub",
        "dir": str(out),
        "files": [name for name in HUB_FILES if (out / name).is_file()],
        "backbone": backbone.name,
        "timm_name": backbone.timm_name,
        "weights": loaded.meta["loaded"],
        "pool": backbone.pool,
        "checkpoint": loaded.path,
    }
    if push_to_hub is not None:
        result["url"] = push_folder(
            out, push_to_hub, f"{loaded.meta.get('method')} {backbone.name}"
        )
    return result


def data_config(loaded: LoadedBackbone) -> dict[str, Any]:
    """timm's preprocessing keys for selfsup's evaluation view of ``loaded``: shorter side
    resized (bilinear, antialiased: torchvision's default) to ``size / crop_ratio``, centre
    crop of ``size``, normalised. timm floors ``size / crop_pct`` where selfsup rounds: the
    same resize whenever the crop is whole (up to 64 px) or divides evenly (224 at 0.875)."""
    transform = loaded.eval_transform()
    in_chans = int(loaded.meta["in_chans"])
    return {
        "input_size": (in_chans, transform.size, transform.size),
        "interpolation": "bilinear",
        "crop_pct": float(transform.crop_ratio),
        "crop_mode": "center",
        "mean": tuple(loaded.mean),
        "std": tuple(loaded.std),
    }


def _timm_model(backbone: Backbone) -> torch.nn.Module:
    """A copy of the backbone's timm model as timm's writer wants it: weights in the
    default memory layout (safetensors refuses the channels-last strides of selfsup's
    ResNets), and a pretrained_cfg that describes the architecture, not timm's weights."""
    model = copy.deepcopy(backbone.model).to(memory_format=torch.contiguous_format)
    model.pretrained_cfg = {
        k: v for k, v in backbone.model.pretrained_cfg.items() if k in _ARCHITECTURE_CFG
    }
    return model


def _provenance(backbone: Backbone, loaded: LoadedBackbone) -> dict[str, Any]:
    meta = loaded.meta
    kwargs = {**meta.get("backbone_kwargs", {}), "pool": backbone.pool}
    return {
        "format": HUB_FORMAT,
        "selfsup_version": selfsup.__version__,
        "method": meta.get("method"),
        "weights": meta.get("loaded"),
        "backbone": backbone.name,
        "backbone_kwargs": kwargs,
        "image_size": int(meta["image_size"]),
        "checkpoint": Path(loaded.path).name,
    }


def _make_room(out: Path) -> None:
    """Refuse a file or a non-empty folder other than a previous export; clear the files of
    a previous export (other files in it are left alone)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: --format timm-hub writes a directory.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not _is_hub_export(out):
        raise ConfigError(
            f"--out {out} is a non-empty directory that is not a selfsup hub export: give a "
            "new or empty directory (the export would mix its files with the ones there)."
        )
    for name in HUB_FILES:
        (out / name).unlink(missing_ok=True)


def _is_hub_export(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("selfsup") or {}).get("format") == HUB_FORMAT


# --------------------------------------------------------------------------- model card
def run_directory(checkpoint: str | os.PathLike) -> RunDir | None:
    """The run directory a checkpoint file belongs to, if selfsup wrote it."""
    run = RunDir.of_checkpoint(Path(checkpoint).resolve())
    return run if run is not None and run.looks_like_run() else None


def eval_figures(run: RunDir) -> list[dict[str, Any]]:
    """Each ``RUN/eval/*/metrics.json``: its folder, task, headline metric and value
    (``top1`` where the file names no headline) and the checkpoint it evaluated."""
    rows = []
    for path in sorted(run.evaluations.glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(metrics, dict):
            continue
        headline = metrics.get("headline")
        if isinstance(headline, dict) and headline.get("metric"):
            metric, value, std = headline["metric"], headline.get("value"), headline.get("std")
        else:
            metric, value, std = "top1", metrics.get("top1"), None
        ckpt = metrics.get("checkpoint")
        if isinstance(ckpt, dict):  # a file's identity: path, size, mtime
            ckpt = ckpt.get("path") or ckpt.get("name")
        rows.append({"name": path.parent.name, "task": metrics.get("task"), "metric": metric,
                     "value": value, "std": std, "checkpoint": Path(str(ckpt)).name if ckpt else ""})  # fmt: skip
    return rows


def model_card(loaded: LoadedBackbone, out: Path, repo_id: str | None = None) -> str:
    """README.md with Hugging Face front matter: how the backbone was trained (from the
    checkpoint and its run directory) and how to load it (from ``repo_id`` on the hub, or
    ``ORG/NAME`` where it is not known yet, and from the folder)."""
    meta, backbone = loaded.meta, loaded.backbone
    method = str(meta.get("method"))
    run = None if loaded.path.endswith(".safetensors") else run_directory(loaded.path)
    config_text = run.config.read_text() if run and run.config.is_file() else None
    details = [
        f"- **Method:** {method} (self-supervised), {meta.get('loaded')} weights"
        f"{' (the ones selfsup evaluates)' if meta.get('loaded') == meta.get('eval_backbone') else ''}",
        f"- **Backbone:** selfsup `{backbone.name}` = timm `{backbone.timm_name}` with "
        + ", ".join(f"`{k}={v!r}`" for k, v in backbone.timm_kwargs.items())
        + f"; features of {backbone.embed_dim} dimensions ({backbone.pool} pooling)",
        f"- **Input:** {meta['in_chans']} x {meta['image_size']} x {meta['image_size']}, "
        f"mean {_floats(loaded.mean)}, std {_floats(loaded.std)}",
    ]
    data = _data_path(config_text)
    if data is not None:
        details.append(f"- **Data:** `{data}`")
    details += _training(loaded.path)
    init_from = meta.get("init_from")
    if init_from:
        shown = (", ".join(f"{k}: `{v}`" for k, v in init_from.items())
                 if isinstance(init_from, dict) else f"`{init_from}`")  # fmt: skip
        details.append(f"- **Initialised from:** {shown}")
    details.append(f"- **Checkpoint:** `{Path(loaded.path).name}`")
    tags = ["timm", "image-feature-extraction", "self-supervised", "selfsup", method.lower()]
    lines = [
        "---",
        "library_name: timm",
        "pipeline_tag: image-feature-extraction",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# {repo_id.split('/')[-1] if repo_id else out.name}",
        "",
        f"A {backbone.name} backbone pretrained with {method} by selfsup, in timm's format: "
        "`model(x)` gives pooled features (no classifier, `num_classes=0`).",
        "",
        "## Model details",
        "",
        *details,
        "",
        *_evaluation(run),
        "## How to load",
        "",
        "```python",
        "import timm",
        "",
        f'model = timm.create_model("hf-hub:{repo_id or "ORG/NAME"}", pretrained=True).eval()',
        f'# offline, from a copy of this folder: timm.create_model("local-dir:path/to/{out.name}", pretrained=True)',
        "config = timm.data.resolve_data_config({}, model=model)  # selfsup's evaluation view",
        "transform = timm.data.create_transform(**config)",
        f"features = model(transform(image).unsqueeze(0))  # (1, {backbone.embed_dim})",
        "```",
        "",
    ]
    if config_text is not None:
        lines += ["## Training config", "", "<details>",
                  "<summary>The run's resolved config (RUN/config.yaml)</summary>", "",
                  "```yaml", config_text.rstrip(), "```", "", "</details>", ""]  # fmt: skip
    return "\n".join(lines)


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _data_path(config_text: str | None) -> str | None:
    if config_text is None:
        return None
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return None
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return None
    path = data.get("path") or (data.get("init_args") or {}).get("path")
    return None if path is None else str(path)


def _training(path: str) -> list[str]:
    if path.endswith(".safetensors"):
        return []
    checkpoint = read_checkpoint(path, mmap=True)
    if "global_step" not in checkpoint:
        return []
    epoch = f", epoch {checkpoint['epoch']}" if "epoch" in checkpoint else ""
    return [
        f"- **Training:** {checkpoint['global_step']} steps{epoch} (as the checkpoint records them)"
    ]


def _evaluation(run: RunDir | None) -> list[str]:
    rows = eval_figures(run) if run is not None else []
    if not rows:
        return []
    lines = ["## Evaluation", "", "Figures found under the run's `eval/` directory.", "",
             "| evaluation | task | metric | value | checkpoint |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        value = "n/a" if not isinstance(r["value"], int | float) else f"{r['value']:.4f}"
        if isinstance(r["std"], int | float):
            value += f" ± {r['std']:.4f}"
        lines.append(f"| {r['name']} | {r['task']} | {r['metric']} | {value} | {r['checkpoint']} |")
    return [*lines, ""]


# --------------------------------------------------------------------------- upload
def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as e:
        raise ConfigError(
            f"--push_to_hub {repo_id!r} is not a Hugging Face repo id ({str(e).splitlines()[0]}): "
            "give ORG/NAME."
        ) from None


def push_folder(folder: Path, repo_id: str, what: str) -> str:
    """Upload ``folder`` as it is to the model repo ``repo_id`` (created if missing); the
    repo's URL. Needs the network and a token (``hf auth login`` or ``HF_TOKEN``).

    ``upload_folder`` rather than timm's ``push_to_hf_hub``: the latter re-serialises the
    model into a temporary folder and writes its own generic README (only when the repo has
    none), so the model card and the very files checked with ``local-dir:`` would not be
    the ones uploaded."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(library_name="selfsup", library_version=selfsup.__version__)
        repo = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder),
                          commit_message=f"selfsup export: {what}")  # fmt: skip
    except _hub_errors() as e:
        detail = (str(e).splitlines() or ["no detail"])[0][:200]
        raise ConfigError(
            f"--push_to_hub {repo_id}: the upload failed ({type(e).__name__}: {detail}); "
            f"{folder} is written: with the network and a token (hf auth login, or HF_TOKEN), "
            f"upload it with `hf upload {repo_id} {folder}` or run the export again."
        ) from None
    return str(repo)


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What an upload raises when the hub cannot be reached or refuses: offline mode, HTTP
    status errors and a missing token are OSErrors, a bad repo id a ValueError; connection
    failures are the HTTP library's own errors (``huggingface_hub.utils.httpx``)."""
    import huggingface_hub.utils as hf_utils

    http = getattr(hf_utils, "httpx", None)  # absent before 1.0, where requests' are OSErrors
    return (OSError, ValueError, *([http.HTTPError] if http is not None else []))
