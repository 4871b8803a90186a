"""Test-only callback: what the EMA teacher test needs to redo the EMA by hand.

Each rank saves, at the end of training, its teacher's parameters (and DINO's centre)
to ``teacher_rank{R}.pt``. Rank 0 also saves ``ema_history.pt``: the student's and the
teacher's parameters (those the EMA pairs) before the first step and at the end of
every batch that took an optimizer step, the momentum the method's schedule gives for
each step, and which teacher parameter follows which student parameter.

At a batch end the optimizer step and the teacher's update (the method's
``optimizer_step``) are both done: what a checkpoint written there would hold.
"""

import os

import pytorch_lightning as pl
import torch


def _ema_names(pl_module: pl.LightningModule) -> dict[str, str]:
    """``{student parameter name: teacher parameter name}`` over the method's EMA pairs."""
    module_names = {id(m): name for name, m in pl_module.named_modules()}
    names = {}
    for student, teacher in pl_module._ema_pairs:
        s_prefix, t_prefix = module_names[id(student)], module_names[id(teacher)]
        for (s_name, _), (t_name, _) in zip(
            student.named_parameters(), teacher.named_parameters(), strict=True
        ):
            names[f"{s_prefix}.{s_name}"] = f"{t_prefix}.{t_name}"
    return names


class DumpTeacher(pl.Callback):
    def __init__(self) -> None:
        self.students: list[dict[str, torch.Tensor]] = []
        self.teachers: list[dict[str, torch.Tensor]] = []
        self.momenta: list[float] = []
        self.steps: list[int] = []

    def _params(self, pl_module: pl.LightningModule, names) -> dict[str, torch.Tensor]:
        params = dict(pl_module.named_parameters())
        return {name: params[name].detach().clone() for name in names}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.names = _ema_names(pl_module)
        self.students = [self._params(pl_module, self.names)]
        self.teachers = [self._params(pl_module, self.names.values())]
        self._recorded_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self._recorded_step:  # an optimizer step just happened
            self._recorded_step = trainer.global_step
            self.students.append(self._params(pl_module, self.names))
            self.teachers.append(self._params(pl_module, self.names.values()))
            self.steps.append(trainer.global_step)
            self.momenta.append(pl_module.teacher_momentum(trainer.global_step - 1))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {
            name: p.detach().clone()
            for name, p in pl_module.named_parameters()
            if name.startswith("teacher_")
        }
        # DINO's centre: all-reduced, so identical on every rank too.
        state.update({n: b.detach().clone() for n, b in pl_module.named_buffers() if "center" in n})
        root = trainer.default_root_dir
        torch.save(state, os.path.join(root, f"teacher_rank{trainer.global_rank}.pt"))
        if trainer.global_rank == 0:
            history = {
                "names": self.names,
                "students": self.students,
                "teachers": self.teachers,
                "momenta": self.momenta,
                "steps": self.steps,
                "total_steps": int(trainer.estimated_stepping_batches),
            }
            torch.save(history, os.path.join(root, "ema_history.pt"))
