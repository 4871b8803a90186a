"""The 224 px input pipeline per CPU core: decoding and each method's views, from a JPEG
folder, a DICOM tree and shards, beside lightly's transforms; the device pipeline's cost
on the CPU; and the cores each method needs to feed one GPU.

    python benchmarks/input_224.py [--images 64] [--side 512] [--out runs/input224]

Sources: the 98 chest X-rays of ``cxr_seg128.npz`` upsampled (bicubic) to ``--side`` px, the
size groups often pre-resize MIMIC-CXR or CheXpert to; the first ``--images`` of them
written as a folder of gray JPEGs (quality 90), as a DICOM tree (16-bit MONOCHROME2,
uncompressed) and that tree packed to shards. Everything runs on one thread, as one
DataLoader worker does; each figure is the median of 3 passes after a first (page cache
warm, shards opened).

- decoding: selfsup's dataset ``ds[i]`` (file -> tensor) per source;
- views: each method's selfsup transform at 224 px (SimCLR and BYOL 2 x 224, DINO 2 x 224 +
  10 x 96, MAE and I-JEPA 1 x 224) on the decoded image, in RGB (the image repeated, as a
  colour set is) and gray (``grayscale: true``), and lightly's transform of the same name on
  the same image (as a PIL image, which lightly takes; the conversion is counted);
- the device pipeline (``--data.device_augment``): the workers' part (resize to the 256 px
  load square) per image, and the kornia views of a batch of 32 run on this CPU;
- cores per GPU: a GPU's images/s for each method over one core's decode + views rate.
  GPU images/s are derived from timm's published training throughput of the backbone at 224
  px (RTX 3090, AMP: ViT-S/16 1052.9 and ResNet-50 826.1 images/s,
  ``pytorch-image-models/results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv``) divided
  by each method's work per image in backbone training passes (forward + backward = 1,
  forward alone = 1/3, token count linear): SimCLR 2, BYOL 2 + 2/3 (teacher), DINO 2 + 10 x
  36/196 + 2/3, MAE 0.25 (encoder on a quarter of the patches) + 0.3 (decoder), I-JEPA about
  0.6 + 1/3 + 0.1 (context encoder, target encoder, predictor). A measured anchor beside
  them: stable-pretraining's Barlow Twins ViT-S/16 on one H200, 870.9 images/s of 2 x 224
  views with kornia on the GPU (341.6 with 8 CPU workers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lib.common import REPO, RESULTS_DIR, machine, run_selfsup, write_section
from lib.dicom_files import write_dicom

CXR = REPO.parent / "shared/data/cxr_seg128.npz"
RECORDS = RESULTS_DIR / "input_224_runs.json"
#: timm's RTX 3090 AMP training throughput at 224 px (images/s), the backbones' own.
TIMM_3090 = {"ViT-S/16": 1052.92, "ResNet-50": 826.06}
#: Each method's work per image, in backbone training passes at 224 px.
WORK = {"SimCLR": 2.0, "BYOL": 2 + 2 / 3, "DINO": 2 + 10 * 36 / 196 + 2 / 3, "MAE": 0.25 + 0.3,
        "I-JEPA": 0.6 + 1 / 3 + 0.1}  # fmt: skip


def write_sources(out: Path, n: int, side: int) -> dict[str, Path]:
    """The JPEG folder, the DICOM tree and its shards (made once)."""
    from PIL import Image

    d = np.load(CXR)
    films = np.concatenate([d["x_train"], d["x_test"]])[:n]
    jpeg, dicom = out / "jpeg", out / "dicom"
    if not jpeg.is_dir():
        (jpeg / "train" / "film").mkdir(parents=True)
        dicom.mkdir(parents=True)
        for i, film in enumerate(films):
            big = Image.fromarray(film).resize((side, side), Image.BICUBIC)
            big.save(jpeg / "train" / "film" / f"{i:04d}.jpg", quality=90)
            write_dicom(
                dicom / f"{i:04d}.dcm", np.asarray(big).astype(np.uint16) * 257, f"p{i:04d}"
            )
    shards = out / "shards"
    if not (shards / "selfsup.json").is_file():
        run_selfsup("data", "pack", "--data.path", str(dicom), "--out", str(shards))
    return {"JPEG folder": jpeg, "DICOM tree": dicom, "shards": shards}


def rate(fn, items: list, passes: int = 3) -> float:
    """Items per second of ``fn`` over ``items``: median of ``passes`` after a first."""
    for item in items:
        fn(item)
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for item in items:
            fn(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def transforms() -> dict[str, dict]:
    import lightly.transforms as L

    from selfsup import transforms as S

    def both(cls, **kw):
        return {"rgb": cls(**kw), "gray": cls(**kw, grayscale=True, mean=(0.5,), std=(0.25,))}

    return {
        "SimCLR": {**both(S.SimCLRTransform, size=224), "lightly": L.SimCLRTransform(input_size=224)},
        "BYOL": {**both(S.BYOLTransform, size=224), "lightly": L.BYOLTransform()},
        "DINO": {**both(S.DINOTransform, size=224, local_size=96, n_local=10),
                 "lightly": L.DINOTransform(global_crop_size=224, local_crop_size=96, n_local_views=10)},
        "MAE": {"rgb": S.MAETransform(224), "gray": S.MAETransform(224, mean=(0.5,), std=(0.25,)),
                "lightly": L.MAETransform(input_size=224)},
        "I-JEPA": {"rgb": S.IJEPATransform(224), "gray": S.IJEPATransform(224, mean=(0.5,), std=(0.25,))},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "input224")
    parser.add_argument("--render_only", action="store_true")
    args = parser.parse_args()
    if args.render_only:
        write_section(
            "Input pipeline at 224 px, per core (`input_224`)",
            render(json.loads(RECORDS.read_text())),
        )
        return
    from torchvision.transforms import v2

    from selfsup.data.datasets import open_dataset
    from selfsup.data.device_views import DeviceViews, LoadTransform

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    sources = write_sources(args.out, args.images, args.side)
    records: dict = {
        "machine": machine(),
        "images": args.images,
        "side": args.side,
        "decode": {},
        "views": {},
    }
    decoded = None
    for name, path in sources.items():
        ds = open_dataset(str(path), "train")
        records["decode"][name] = rate(lambda i, ds=ds: ds[i], list(range(len(ds))))
        print(name, f"{records['decode'][name]:.0f}/s", flush=True)
        if name == "JPEG folder":
            decoded = [ds[i][0] for i in range(len(ds))]  # (1, side, side) uint8
    rgb = [x.expand(3, -1, -1).contiguous() for x in decoded]
    to_pil = v2.ToPILImage()
    for method, sides in transforms().items():
        for side, transform in sides.items():
            items = decoded if side == "gray" else rgb
            fn = (lambda x, t=transform: t(to_pil(x))) if side == "lightly" else transform
            records["views"][f"{method}/{side}"] = rate(fn, items)
            print(method, side, f"{records['views'][f'{method}/{side}']:.1f}/s", flush=True)
    load = LoadTransform(256)
    records["device"] = {"load": rate(load, rgb)}
    batch = torch.stack([load(x) for x in rgb[:32]])
    for method, sides in transforms().items():
        views = DeviceViews(sides["rgb"])
        start = time.perf_counter()
        for _ in range(3):
            views(batch)
        records["device"][method] = 3 * len(batch) / (time.perf_counter() - start)
        print("device", method, f"{records['device'][method]:.1f}/s", flush=True)
    RECORDS.write_text(json.dumps(records, indent=1))
    write_section("Input pipeline at 224 px, per core (`input_224`)", render(records))


def render(r: dict) -> str:
    decode, views, device = r["decode"], r["views"], r["device"]
    methods = ["SimCLR", "BYOL", "DINO", "MAE", "I-JEPA"]
    lines = ["| method (views) | selfsup RGB | selfsup gray | lightly RGB | device pipeline on this CPU |",
             "|---|---|---|---|---|"]  # fmt: skip
    shapes = {"SimCLR": "2 × 224", "BYOL": "2 × 224", "DINO": "2 × 224 + 10 × 96", "MAE": "1 × 224",
              "I-JEPA": "1 × 224"}  # fmt: skip
    for m in methods:
        lt = views.get(f"{m}/lightly")
        lines.append(f"| {m} ({shapes[m]}) | {views[f'{m}/rgb']:.0f} | {views[f'{m}/gray']:.0f} | "
                     f"{f'{lt:.0f}' if lt else '—'} | {device[m]:.0f} |")  # fmt: skip
    dec = " · ".join(f"{k} {v:,.0f}" for k, v in decode.items())
    cores = ["| method | GPU images/s (ViT-S/16, RTX 3090, derived) | " + " | ".join(
        f"cores, {k} + views" for k in decode) + " | cores, device pipeline (shards) |",
        "|---|---|" + "---|" * (len(decode) + 1)]  # fmt: skip
    for m in methods:
        gpu = TIMM_3090["ViT-S/16"] / WORK[m]
        per_core = [1 / (1 / d + 1 / views[f"{m}/rgb"]) for d in decode.values()]
        device_core = 1 / (1 / decode["shards"] + 1 / device["load"])
        cores.append(f"| {m} | {gpu:,.0f} | " + " | ".join(f"{gpu / c:.1f}" for c in per_core)
                     + f" | {gpu / device_core:.1f} |")  # fmt: skip
    return f"""Machine: {r["machine"]}; one thread throughout.

    python benchmarks/input_224.py --images {r["images"]} --side {r["side"]}

Chest X-rays at {r["side"]} px ({r["images"]} films of `cxr_seg128.npz`, upsampled), read by selfsup's
datasets. **Decoding, images/s per core**: {dec}.

**Views, images/s per core** (decoded image in, views out; the device pipeline's column is
the kornia views of a batch of 32 from 256 px squares, run on this CPU, per image):

{chr(10).join(lines)}

The workers' part with the device pipeline (resize to the 256 px load square): {device["load"]:,.0f} images/s per core.

**Cores to feed one GPU** = the GPU's images/s ÷ one core's images/s for decoding + views
(the two rates combined as 1 / (1/decode + 1/views)). GPU images/s: timm's RTX 3090 AMP
training throughput of ViT-S/16 at 224 px (1052.9 images/s) ÷ each method's work per image
(SimCLR 2, BYOL 2.67, DINO 4.5, MAE 0.55, I-JEPA 1.03 backbone passes). The one measured
anchor on a current GPU: stable-pretraining's Barlow Twins ViT-S/16 (2 × 224) at 870.9
images/s on one H200 with the views on the GPU, 1.7x the 3090-derived 526 for the same work:
multiply the cores by about 1.7 for an H100/H200.

{chr(10).join(cores)}

{READING}
"""


#: What the figures say, written after looking at them (records of 2026-12-07).
READING = """What it says. At 224 px the views, not the decoding, take a worker's time for the
contrastive and multi-crop methods: DINO's 2 + 10 crops run at 39 images/s per core in RGB,
so one RTX 3090 needs 6 cores and an H100/H200 about 10, more than a node with 8 GPUs and 64
cores gives; SimCLR needs 5-6 (9-10 on an H100). Grayscale views (medical data, `grayscale:
true`: no saturation, hue or random grayscale) are 3-4x cheaper. MAE and I-JEPA views are
cheap, and there the decoding sets the pace: a DICOM tree decodes at 870 images/s per core,
shards and JPEGs at 2,050 (2.4x), which turns MAE's 3.9 cores into 2.7. With the device
pipeline the workers only decode and resize (1,032 images/s per core), 0.3-0.8 cores per GPU
for every method; kornia's views themselves run slower than torchvision's on a CPU (63
against 102 images/s for SimCLR), so `device_augment` is for accelerators, and its GPU cost
is `gpu_check`'s to measure on the day a GPU is lent. selfsup's views keep up with lightly's
(SimCLR 102 against 106, DINO 39 against 36) and are 4x faster for MAE (1,110 against 266,
lightly's PIL crop of the 512 px image); in a first run of this benchmark (on a loaded machine) they were 3.6x slower for
SimCLR: torchvision's Gaussian blur convolves with the full 23 x 23 kernel (31 ms per view),
now two banded matrix products (selfsup.transforms.SeparableGaussianBlur, the same output),
and the crop now runs on the uint8 image before the conversion to float."""


if __name__ == "__main__":
    main()
