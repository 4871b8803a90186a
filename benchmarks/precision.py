"""bf16 autocast against fp32 on this CPU: why selfsup trains in fp32 where bf16 is emulated.

    .venv/bin/python benchmarks/precision.py [--batch 32] [--rounds 2]

One training step (forward, backward, SGD update) of a ResNet-18 with the CIFAR stem and
of a ViT-Tiny/4, each with a linear head, on a batch of 32 px images: fp32 and bf16
autocast alternate in ``--rounds`` rounds (one warm-up step, then one timed step per
round), medians over rounds. Also records what torch reports of the CPU (its kernel
level, and whether oneDNN runs bf16 natively: ``selfsup.precision``). Every run
adds its machine to benchmarks/results/precision_runs.json and rewrites the "Precision
on CPUs" section of RESULTS.md from all machines recorded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import timm
import torch

from lib.common import RESULTS_DIR, cpu_model, machine, write_section
from lib.records import load_records, write_records
from selfsup.precision import cpu_has_native_bf16

RECORDS = RESULTS_DIR / "precision_runs.json"
NETS = {
    "ResNet-18 (CIFAR stem)": lambda: timm.create_model("resnet18", num_classes=10),
    "ViT-Tiny/4": lambda: timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10
    ),
}


def step_time(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor, bf16: bool) -> float:  # fmt: skip
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def measure(batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    rows = {}
    for name, make in NETS.items():
        net = make()
        if "ResNet" in name:  # the CIFAR stem, as selfsup's backbones build it
            net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = torch.nn.Identity()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for bf16 in (False, True):
                step_time(net, opt, x, y, bf16)  # warm-up: kernels, allocator
                times[bf16].append(step_time(net, opt, x, y, bf16))
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        rows[name] = {"fp32_img_s": batch / fp32, "bf16_img_s": batch / bf16}
        print(f"{name}: fp32 {batch / fp32:.1f} img/s, bf16 {batch / bf16:.1f} img/s", flush=True)
    return {
        "cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
        "batch": batch, "rounds": rounds, "nets": rows, "machine": machine(),
    }  # fmt: skip


def render(records: list[dict]) -> None:
    lines = [
        "`benchmarks/precision.py` (one line per machine; each run adds or replaces its "
        "CPU's). A training step (forward, backward, SGD) of each backbone with a linear "
        "head on 32 px images, fp32 against bf16 autocast, alternating, medians over "
        'rounds. "native bf16" is oneDNN\'s own check (AVX-512 core or AMX on x86): where '
        "it is false, `selfsup pretrain` and `selfsup finetune` train a bf16 config in "
        "32-true and say so in one line (`selfsup/precision.py`).",
        "",
        "| CPU (torch kernels) | native bf16 | threads | batch | backbone | fp32 img/s | "
        "bf16 img/s | bf16 / fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for name, v in r["nets"].items():
            lines.append(
                f"| {r['cpu']} ({r['capability']}) | {'yes' if r['native_bf16'] else 'no'} | "
                f"{r['threads']} | {r['batch']} | {name} | {v['fp32_img_s']:.1f} | "
                f"{v['bf16_img_s']:.1f} | {v['bf16_img_s'] / v['fp32_img_s']:.2f} |"
            )
    lines += ["", "Machines: " + "; ".join(r["machine"] for r in records) + "."]
    write_section("Precision on CPUs (`precision`)", "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    records = load_records(RECORDS)
    new = measure(args.batch, args.rounds)
    key = (new["cpu"], new["capability"], new["native_bf16"])
    records = [r for r in records if (r["cpu"], r["capability"], r["native_bf16"]) != key]
    records.append(new)
    write_records(RECORDS, records)
    render(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
