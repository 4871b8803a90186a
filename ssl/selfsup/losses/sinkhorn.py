"""Sinkhorn-Knopp normalisation of the teacher's outputs (DINOv2's alternative to centring).

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024,
Sec. 4 ("we replace the teacher softmax-centering step of DINO and iBOT by the
Sinkhorn-Knopp batch normalization of SwAV"); Caron et al., "Unsupervised Learning of
Visual Features by Contrasting Cluster Assignments" (SwAV), NeurIPS 2020, Sec. 3.1 and
Algorithm 1: ``Q = exp(t / tau)^T`` (K x B), then ``n`` times: rows scaled to sum to
``1 / K`` (every prototype gets an equal share of the batch), columns scaled to sum to
``1 / B`` (every sample is one assignment); the columns, times ``B``, are the targets.

The sums run over the rows of *every* process (each sum is all-reduced, ``B`` is the
all-process number of rows), so two processes holding half the rows each give the rows
one process holding all of them would. The row count may differ between processes
(masked patches do), as in DINOv2's iBOT version.

Departure from the reference (``dinov2/loss/dino_clstoken_loss.py``): the logits have
their all-process maximum subtracted before ``exp``; the first normalisation cancels the
constant factor, and a head whose last layer is not weight-normalised cannot overflow;
sums are floored at float32's smallest normal number, so a prototype or a sample whose
every entry underflows gets no mass rather than NaN.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t


@torch.no_grad()
def sinkhorn_knopp(
    teacher: torch.Tensor, teacher_temp: float, n_iterations: int = 3
) -> torch.Tensor:
    """Sinkhorn-Knopp targets for teacher logits ``(N, K)``: ``(N, K)`` float32 rows that
    each sum to 1, and whose columns, summed over all processes' rows, are near ``B / K``.

    Args:
        teacher: teacher head outputs, one row per sample (or masked patch).
        teacher_temp: ``tau``; the same schedule as DINO's teacher temperature.
        n_iterations: row/column normalisation rounds (3, as DINOv2 and SwAV).
    """
    with torch.autocast(device_type=teacher.device.type, enabled=False):
        logits = teacher.float() / teacher_temp
        peak = _all_reduce(logits.max().reshape(1), dist.ReduceOp.MAX)
        q = torch.exp(logits - peak).t()  # (K, N)
        k, tiny = q.shape[0], torch.finfo(torch.float32).tiny
        b = _all_reduce(torch.tensor([float(q.shape[1])], device=q.device))
        q /= _all_reduce(q.sum().reshape(1))
        for _ in range(n_iterations):
            q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp_min(tiny)  # each prototype: 1 / K
            q /= k
            q /= q.sum(dim=0, keepdim=True).clamp_min(tiny)  # each sample: 1 / B of the mass
            q /= b
        return (q * b).t()
