"""The collapse monitor: its statistic against a naive computation, and one warning per run."""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.train.collapse_monitor import CollapseMonitor, CollapseWatch, embedding_std


def test_embedding_std_is_the_mean_per_dimension_std_of_normalised_rows():
    z = torch.randn(50, 8) * torch.tensor([5.0] + [1.0] * 7)
    zn = z / z.norm(dim=1, keepdim=True)
    naive = sum(float(zn[:, d].std()) for d in range(8)) / 8
    assert embedding_std(z) == pytest.approx(naive, rel=1e-5)
    assert embedding_std(torch.ones(50, 8)) == pytest.approx(0.0, abs=1e-7)  # one point
    # Closed form: +-e_1 .. +-e_D in equal numbers -> each dimension is 0 except a
    # 1/D share of +-1, so its std is sqrt(2m / (2mD - 1)) for m copies of each.
    d, m = 4, 5
    eye = torch.eye(d)
    z = torch.cat([eye, -eye] * m)
    assert embedding_std(z) == pytest.approx(math.sqrt(2 * m / (2 * m * d - 1)), rel=1e-6)


def test_watch_warns_once_after_patience():
    watch = CollapseWatch(std_ratio_threshold=0.05, patience=3)
    assert watch.update(0, 0.01) is None  # random init can look collapsed: not yet
    assert watch.update(1, 0.8) is None  # recovered: the count restarts
    messages = [watch.update(step, 0.01) for step in range(2, 10)]
    assert [m is not None for m in messages] == [False, False, False, True] + [False] * 4
    assert "0.010" in messages[3] and "for 3 steps" in messages[3]
    # A method's own symptom counts even when the std looks healthy.
    watch = CollapseWatch(patience=0)
    assert "uniform" in watch.update(0, 1.0, "the teacher's output is uniform")


class Collapsing(pl.LightningModule):
    """Every image maps to the same embedding."""

    collapse_hint = "try the obvious"

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 8)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        z = self.layer(x) * 0 + self.layer.bias
        return {"loss": z.sum(), "embeddings": z.detach()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_a_collapsed_run_logs_and_warns_once(tmp_path, recwarn):
    data = DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=4)
    monitor = CollapseMonitor(every_n_steps=1, patience=5)
    trainer = pl.Trainer(
        max_steps=20, callbacks=[monitor], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        accelerator="cpu", log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(Collapsing(), data)
    warned = [str(w.message) for w in recwarn if "looks collapsed" in str(w.message)]
    assert len(warned) == 1
    assert "Collapsing" in warned[0] and "try the obvious" in warned[0] and "0.000" in warned[0]
    assert trainer.callback_metrics["train/embedding_std_ratio"] == pytest.approx(0.0, abs=1e-6)
