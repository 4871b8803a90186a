"""Fine-tuning: layer-wise learning-rate decay over the ViT's depth, and a short real run."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.backbones import Backbone
from selfsup.eval.finetune import Classifier, FineTune


class Capture(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.lr_of = {}
        for group in opt.param_groups:
            for p in group["params"]:
                self.lr_of[id(p)] = group["initial_lr"]


def test_layer_decay_scales_each_block_and_the_run_learns(tmp_path):
    torch.manual_seed(0)
    depth, decay = 3, 0.5
    backbone = Backbone(
        "vit_tiny", img_size=16, patch_size=4, depth=depth, embed_dim=32, num_heads=2
    )
    classifier = Classifier(backbone, num_classes=2)
    module = FineTune(classifier, 2, base_lr=2e-2, layer_decay=decay, warmup_epochs=0,
                      mixup=0.0, cutmix=0.0, label_smoothing=0.0, batch_size=16)  # fmt: skip
    # Two classes that differ in brightness: learnable in a few steps.
    y = torch.arange(64) % 2
    x = torch.randn(64, 3, 16, 16) * 0.1 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    capture = Capture()
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[capture], default_root_dir=tmp_path, accelerator="cpu")  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True))
    lr = capture.lr_of
    vit = backbone.model
    head = lr[id(classifier.head.weight)]
    assert head == pytest.approx(2e-2 * 16 / 256)
    # BEiT/MAE layer ids: embeddings 0, block i -> i + 1, final norm depth + 1 (scale 1).
    assert lr[id(vit.norm.weight)] == pytest.approx(head)
    for i, block in enumerate(vit.blocks):
        assert lr[id(block.attn.qkv.weight)] == pytest.approx(head * decay ** (depth - i))
    assert lr[id(vit.patch_embed.proj.weight)] == pytest.approx(head * decay ** (depth + 1))
    classifier.eval()
    with torch.no_grad():
        accuracy = (classifier(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9
