"""Test-only callback: each rank saves its EMA teacher's parameters at the end of training."""

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
        path = os.path.join(trainer.default_root_dir, f"teacher_rank{trainer.global_rank}.pt")
        torch.save(state, path)
