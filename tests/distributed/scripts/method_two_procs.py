"""Two gloo processes with batch B each against one process with batch 2B: a whole
method's loss, its gradients and (DINO) its centre after the update.

Run as a standalone script (never inside pytest's process):
    python method_two_procs.py OUT.json METHOD
    METHOD: byol | dino | dinov2 | dinov2_sk | mae | ijepa

MAE, I-JEPA and DINOv2 get the same masks in both runs (drawn once for the whole batch);
DINOv2's masked patches then differ in number between the two processes. DINOv2 runs
without KoLeo, which is per process by definition (nearest neighbours within each
process's batch, as the reference); its centres (dinov2) and Sinkhorn-Knopp
(dinov2_sk) are all-reduced.

The backbone is a ViT and BYOL's heads have their BatchNorm replaced by identity:
BN statistics are per process without SyncBatchNorm (which has no CPU kernel), so
only BN-free networks can be compared exactly on CPU.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.block_masks import draw_masks
from selfsup.masks import random_masking
from selfsup.methods import BYOL, DINO, IJEPA, MAE, DINOv2

B = 3
VIT = {"backbone": "vit_tiny", "backbone_kwargs": {"img_size": 16, "patch_size": 4}}


def without_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.Identity())
        else:
            without_batchnorm(child)
    return module


def build(method: str) -> nn.Module:
    torch.manual_seed(0)
    if method == "byol":
        model = BYOL(projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32, **VIT)
        return without_batchnorm(model)
    if method == "mae":
        return MAE(decoder_dim=32, decoder_depth=1, decoder_heads=2, **VIT)
    if method == "ijepa":
        vit = {"img_size": 16, "patch_size": 2, "class_token": False, "pool": "avg"}
        return IJEPA(backbone="vit_tiny", backbone_kwargs=vit, predictor_dim=32,
                     predictor_depth=1, predictor_heads=2, min_keep=4)  # fmt: skip
    if method.startswith("dinov2"):
        sk = (
            {"centering": "sinkhorn_knopp", "separate_ibot_head": True}
            if method == "dinov2_sk"
            else {}
        )
        model = DINOv2(projection_hidden_dim=32, bottleneck_dim=16, out_dim=64, koleo_weight=0.0,
                       gram_weight=1.0, **sk, **VIT)  # fmt: skip
        model.mask_token.data.normal_(generator=torch.Generator().manual_seed(4))
        model.patch_criterion.center.normal_(0, 0.1, generator=torch.Generator().manual_seed(5))
    else:
        model = DINO(projection_hidden_dim=32, bottleneck_dim=16, out_dim=64, **VIT)
    model.criterion.center.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return model


def make_views(method: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(2 * B, 3, 16, 16, generator=g) for _ in range(2)]
    if method.startswith("dino"):
        views += [torch.randn(2 * B, 3, 8, 8, generator=g) for _ in range(2)]
    return views


def make_masks(model: nn.Module, method: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    g = torch.Generator().manual_seed(3)
    if method == "mae":
        return random_masking(2 * B, model.n_patches, 0.75, generator=g)
    if method == "ijepa":
        return model.mask_sampler.sample(2 * B, generator=g)
    if method.startswith("dinov2"):
        torch.manual_seed(3)
        masks = draw_masks(4 * B, (4, 4))  # global crop 1's 2B images, then crop 2's
        return masks[: 2 * B], masks[2 * B :]
    return None


def loss_of(model: nn.Module, method: str, views: list[torch.Tensor], masks, part) -> torch.Tensor:
    if method == "byol":
        return model.training_step((views, None), 0)["loss"]
    if method == "mae":
        return model.mae_step(views[0], masks[0][part], masks[1][part])[0]
    if method == "ijepa":
        return model.ijepa_loss(views[0], masks[0][part], masks[1][part])[0]
    if method.startswith("dinov2"):
        return model.dinov2_loss(views, torch.cat([masks[0][part], masks[1][part]]), 0.05)[0]
    return model.dino_loss(views, teacher_temp=0.05)[0]


def step(method: str, part: slice) -> tuple[nn.Module, torch.Tensor]:
    model = build(method)
    model.train()
    masks = make_masks(model, method)
    # Drop path would draw different random numbers on each process.
    for m in model.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    loss = loss_of(model, method, [v[part] for v in make_views(method)], masks, part)
    loss.backward()
    return model, loss.detach()


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def worker(rank: int, port: int, out: str, method: str) -> None:
    torch.set_num_threads(1)
    # The reference: one process, the whole batch, before any process group exists.
    if rank == 0:
        ref_model, ref_loss = step(method, slice(0, 2 * B))
        ref_grads = grads(ref_model)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model, loss = step(method, slice(rank * B, (rank + 1) * B))
    two_grads = grads(model)
    for g in two_grads.values():  # what DDP does with the gradients
        dist.all_reduce(g)
        g /= 2
    mean_loss = loss.clone()
    dist.all_reduce(mean_loss)
    mean_loss /= 2
    if rank == 0:
        assert two_grads.keys() == ref_grads.keys() and len(ref_grads) > 10
        diff = max((two_grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads)
        scale = max(ref_grads[n].abs().max().item() for n in ref_grads)
        result = {
            "loss_two": mean_loss.item(),
            "loss_one": ref_loss.item(),
            "rank0_loss": loss.item(),
            "grad_max_abs_diff": diff,
            "grad_max_abs": scale,
            "n_grads": len(ref_grads),
        }
        if method.startswith("dino"):
            criteria = ["criterion"] + (["patch_criterion"] if method.startswith("dinov2") else [])
            fresh = build(method)
            result["centre_diff"] = max(
                (getattr(model, c).center - getattr(ref_model, c).center).abs().max().item()
                for c in criteria
            )
            result["centre_moved"] = min(
                (getattr(model, c).center - getattr(fresh, c).center).abs().max().item()
                for c in criteria
            )
        if method.startswith("dinov2"):
            masks = make_masks(model, method)
            halves = [int(m[part].sum()) for part in (slice(0, B), slice(B, 2 * B)) for m in masks]
            result["masked_per_process"] = [halves[0] + halves[1], halves[2] + halves[3]]
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    out_path, method_name = sys.argv[1], sys.argv[2]
    port = int(os.environ.get("SELFSUP_TEST_PORT", "29532"))
    mp.spawn(worker, args=(port, out_path, method_name), nprocs=2, join=True)
