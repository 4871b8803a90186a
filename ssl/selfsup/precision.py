"""bf16 on a CPU that has no bf16 instructions.

Every shipped config trains in ``bf16-mixed``: about twice fp32's speed on GPUs and on
CPUs with AVX-512 or AMX. On a CPU without them (AVX2-only x86 chips, common in
laptops) torch's bf16 convolutions and matrix products leave oneDNN for slow generic
kernels, and the same step takes ~15 times as long as in fp32
(``benchmarks/precision.py``). There, :func:`cpu_precision` runs fp32 instead and says
so in one line; GPU runs and CPUs with native bf16 keep what was asked.
"""

from __future__ import annotations

from typing import Any

import torch

BF16 = ("bf16-mixed", "bf16-true", "bf16")
FP32 = ("32-true", "32")


def cpu_has_native_bf16() -> bool:
    """Whether torch's CPU kernels run bf16 natively here (oneDNN's own check: AVX-512
    core or AMX on x86, the bf16 extension on Arm)."""
    # torch has no public switch for this; mkldnn's probe is what its own tests and
    # inductor use. A build without it: AVX-512 as torch's kernel dispatch sees it.
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def is_fp32(precision: Any) -> bool:
    """Whether Lightning's ``precision`` (``32-true``, ``"32"`` or ``32``) is plain fp32."""
    return str(precision) in FP32


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether a Trainer with ``accelerator`` (name, instance or ``auto``) trains on the CPU."""
    from pytorch_lightning.accelerators import CPUAccelerator

    if isinstance(accelerator, CPUAccelerator) or accelerator == "cpu":
        return True
    if accelerator in (None, "auto"):
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return False


def cpu_precision(precision: Any, accelerator: Any) -> tuple[Any, str | None]:
    """``(precision to train in, the line that says why it changed or None)``: a bf16
    precision becomes ``32-true`` on a CPU without native bf16, else stays."""
    if str(precision) not in BF16 or not runs_on_cpu(accelerator) or cpu_has_native_bf16():
        return precision, None
    capability = torch.backends.cpu.get_cpu_capability()
    return "32-true", (
        f"selfsup: this CPU has no native bf16 kernels (torch sees {capability}), where "
        f"{precision} runs ~15x slower than fp32: training in 32-true instead "
        "(--trainer.precision 32-true asks for it and drops this line)."
    )


def eval_precision(device: Any, precision: str = "auto") -> str:
    """``bf16`` where evaluation runs its forward passes in bf16 autocast: ``auto`` on a
    CUDA GPU with bf16 or a CPU with native bf16 kernels (as training does); ``32``
    otherwise, or when asked. Per-image features do not depend on the batch they are
    computed in (measured on this project's CPU for ResNet-18 and ViT-T), so several
    processes still give one process's figures."""
    if precision == "32":
        return "32"
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "32"


def eval_autocast(device: Any, precision: str = "auto") -> Any:
    """The autocast context of :func:`eval_precision` (a no-op for fp32)."""
    import contextlib

    if eval_precision(device, precision) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
