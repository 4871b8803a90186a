"""Test-only callback: each rank saves its EMA teacher's parameters (and DINO's centre) at the end of training."""

import os

import pytorch_lightning as pl
import torch


class DumpTeacher(pl.Callback):
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {
            name: p.detach().clone()
            for name, p in pl_module.named_parameters()
            if name.startswith("teacher_")
        }
        # DINO's centre: all-reduced, so identical on every rank too.
        state.update({n: b.detach().clone() for n, b in pl_module.named_buffers() if "center" in n})
        path = os.path.join(trainer.default_root_dir, f"teacher_rank{trainer.global_rank}.pt")
        torch.save(state, path)
