"""Two gloo processes with batch B each against one process with batch 2B: a batch loss and its gradients.

Run as a standalone script (never inside pytest's process): python loss_two_procs.py OUT.json LOSS
with LOSS one of: ntxent, triplet_batch_hard, triplet_semi_hard.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses import nt_xent_loss, triplet_loss

B, D_IN, D = 5, 6, 8
TAU = 0.3
LOSSES = {
    "ntxent": lambda z0, z1, gather=True: nt_xent_loss(z0, z1, TAU, gather=gather),
    "triplet_batch_hard": lambda z0, z1, gather=True: triplet_loss(
        z0, z1, 0.5, "batch_hard", gather=gather
    ),
    "triplet_semi_hard": lambda z0, z1, gather=True: triplet_loss(
        z0, z1, 0.5, "semi_hard", gather=gather
    ),
}


def make_problem():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2 * B, D_IN, generator=g), torch.randn(2 * B, D_IN, generator=g)
    weight = torch.randn(D, D_IN, generator=g)
    return x0, x1, weight


def one_process(loss_fn):
    x0, x1, weight = make_problem()
    w = weight.clone().requires_grad_(True)
    # gather=False: this reference runs inside rank 0 while the process group exists.
    loss = loss_fn(x0 @ w.T, x1 @ w.T, gather=False)
    loss.backward()
    return loss.item(), w.grad


def worker(rank: int, port: int, out: str, name: str) -> None:
    loss_fn = LOSSES[name]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x0, x1, weight = make_problem()
    w = weight.clone().requires_grad_(True)
    part = slice(rank * B, (rank + 1) * B)
    loss = loss_fn(x0[part] @ w.T, x1[part] @ w.T)
    loss.backward()
    # What DDP does: average the gradients (and, for reporting, the losses) over processes.
    grad = w.grad.clone()
    dist.all_reduce(grad)
    grad /= 2
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= 2
    # With gathering switched off, the loss is per-process (what the gather prevents).
    local = loss_fn(x0[part] @ weight.T, x1[part] @ weight.T, gather=False)
    if rank == 0:
        ref_loss, ref_grad = one_process(loss_fn)
        with open(out, "w") as f:
            json.dump(
                {
                    "loss_two": mean_loss.item(),
                    "loss_one": ref_loss,
                    "grad_max_abs_diff": (grad - ref_grad).abs().max().item(),
                    "grad_max_abs": ref_grad.abs().max().item(),
                    "rank0_loss": loss.item(),
                    "ungathered_rank0_loss": local.item(),
                },
                f,
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    out_path, loss_name = sys.argv[1], sys.argv[2]
    port = int(os.environ.get("SELFSUP_TEST_PORT", "29531"))
    mp.spawn(worker, args=(port, out_path, loss_name), nprocs=2, join=True)
