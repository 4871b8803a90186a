"""ResNet-18 memory layout on CPU: NCHW vs channels_last, one joint pass vs a pass per view.

    .venv/bin/python benchmarks/layout.py [--rounds 3]

The backbone's forward + backward (selfsup's ResNet-18 with the CIFAR stem, 32 px) on two
views of 64 images, either concatenated into one batch of 128 (SimCLR's joint pass: batch
norm over both views) or as two batches of 64 (lightly's recipes), in fp32 and bf16
autocast, with NCHW and channels_last weights. The settings alternate within each round;
medians over rounds x 2 timed passes. Writes the "ResNet memory layout" section of
benchmarks/results/RESULTS.md; it is why selfsup's ResNets default to channels_last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from lib.common import machine, spread_percent, write_section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from selfsup.backbones import Backbone

    torch.manual_seed(0)
    x0, x1 = torch.randn(64, 3, 32, 32), torch.randn(64, 3, 32, 32)
    nets = {
        layout: Backbone("resnet18", img_size=32, cifar_stem=True, channels_last=layout == "NHWC")
        for layout in ("NCHW", "NHWC")
    }

    def step(net, joint: bool, bf16: bool) -> float:
        net.zero_grad()
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if joint:
                loss = net(torch.cat([x0, x1])).float().square().mean()
            else:
                loss = net(x0).float().square().mean() + net(x1).float().square().mean()
        loss.backward()
        return time.perf_counter() - start

    settings = [(p, layout, joint) for p in ("fp32", "bf16") for layout in nets
                for joint in (True, False)]  # fmt: skip
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    for s in settings:  # warm-up
        step(nets[s[1]], s[2], s[0] == "bf16")
    for r in range(args.rounds):
        for s in settings:
            times[s] += [step(nets[s[1]], s[2], s[0] == "bf16") for _ in range(2)]
            print(f"round {r} {s}: {statistics.median(times[s]):.3f} s", file=sys.stderr)
    rows = ["| precision | weights | two views as | s per fwd+bwd of 128 images | spread % | "
            "vs NCHW joint |", "|---|---|---|---|---|---|"]  # fmt: skip
    for s in settings:
        med = statistics.median(times[s])
        base = statistics.median(times[(s[0], "NCHW", True)])
        rows.append(f"| {s[0]} | {s[1]} | {'one batch of 128' if s[2] else 'two batches of 64'} "
                    f"| {med:.2f} | {spread_percent(times[s]):.0f} | {base / med:.2f}x |")  # fmt: skip
    body = "\n".join([
        f"`benchmarks/layout.py --rounds {args.rounds}`, {machine()}.",
        "",
        *rows,
        "",
    ])  # fmt: skip
    write_section("ResNet memory layout (`layout`)", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
