"""`selfsup pretrain --data.device_augment true`: the workers send resized images, the
views are made on the device from the step's seeded streams; a run repeats to the same
weights, with a method's mask collate function (DINOv2) as without (SimCLR)."""

import pytest
import torch
from test_stop_and_resume import assert_same_weights

from conftest import REPO
from selfsup.cli import main

RUNS = {
    "SimCLR": ["--config", str(REPO / "configs/quickstart.yaml"), "--data.transform.init_args.size", "24"],
    "DINOv2": ["--config", str(REPO / "configs/dinov2/vit_tiny_gray64.yaml"),
               "--model.init_args.backbone_kwargs",
               '{"img_size": 32, "patch_size": 8, "in_chans": 1, "embed_dim": 32, "num_heads": 2, "depth": 2}',
               "--data.transform.init_args.size", "32", "--data.transform.init_args.local_size", "16",
               "--model.init_args.out_dim", "64", "--model.init_args.projection_hidden_dim", "32"],
}  # fmt: skip


def pretrain(run, data, method):
    return main(["pretrain", *RUNS[method], "--data.path", str(data), "--data.device_augment", "true",
                 "--data.batch_size", "16", "--data.num_workers", "1", "--trainer.max_steps", "3",
                 "--trainer.precision", "32", "--trainer.enable_progress_bar", "false",
                 "--knn_monitor.every_n_epochs", "0", "--pictures.every_n_epochs", "0",
                 "--seed_everything", "3", "--trainer.default_root_dir", str(run)])  # fmt: skip


@pytest.mark.parametrize("method", ["SimCLR", "DINOv2"])
def test_device_augmented_runs_train_and_repeat_exactly(method, tiny_npz, tmp_path, capsys):
    assert pretrain(tmp_path / "a", tiny_npz, method) == 0
    size = {"SimCLR": 27, "DINOv2": 37}[method]  # the view size x 8/7
    assert (
        f"selfsup: views made on the cpu (kornia), per sample, from {size} px squares"
        in capsys.readouterr().err
    )
    assert pretrain(tmp_path / "b", tiny_npz, method) == 0
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
