"""Pictures logged during pretraining: attention maps (ViTs) and MAE reconstructions."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from selfsup.run_directory import RunDir
from selfsup.viz.attention import attention_maps, mass_mask, prepare_image, to_rgb, upsample


def _colour(maps: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` -> ``(3, H, W)`` through the inferno colour map, scaled to its maximum."""
    import matplotlib

    values = (maps / maps.max().clamp(min=1e-12)).numpy()
    return (
        torch.from_numpy(matplotlib.colormaps["inferno"](values)[..., :3]).permute(2, 0, 1).float()
    )


@torch.no_grad()
def attention_panels(
    backbone: Any, images: list[torch.Tensor], size: int, mean: Any, std: Any, threshold: float
) -> torch.Tensor:
    """One row per image: the image, its mean-of-heads attention, the thresholded mask."""
    tiles = []
    for image in images:
        x, shown = prepare_image(image, backbone.patch_size, backbone.in_chans, mean, std,
                                 size=(size, size))  # fmt: skip
        maps, _ = attention_maps(backbone, x.to(next(backbone.parameters()).device))
        mean_map = maps[0].mean(0).cpu()
        keep = upsample(mass_mask(mean_map, threshold).float(), backbone.patch_size)
        rgb = to_rgb(shown)
        tiles += [rgb, _colour(upsample(mean_map, backbone.patch_size)), rgb * (0.25 + 0.75 * keep)]
    return make_grid(tiles, nrow=3, padding=2, pad_value=1.0)


class PictureLogger(pl.Callback):
    """Every ``every_n_epochs`` epochs, pictures of a fixed set of images (the first
    ``n_images`` of the test split, else of the training set): the evaluated ViT's
    attention maps, and MAE's reconstructions. They go to wandb when it is on
    (``pictures/attention``, ``pictures/reconstruction``), else to
    ``RUN/pictures/<name>-epoch<E>.png``.

    Args:
        every_n_epochs: 0 switches the pictures off.
        n_images: how many images.
        threshold: the attention mass the mask keeps (as ``selfsup attention``).
    """

    def __init__(self, every_n_epochs: int = 10, n_images: int = 4, threshold: float = 0.6) -> None:
        self.every_n_epochs, self.n_images, self.threshold = every_n_epochs, n_images, threshold
        self._images: list[torch.Tensor] | None = None

    def _pick_images(self, trainer: pl.Trainer) -> list[torch.Tensor]:
        if self._images is None:
            data = trainer.datamodule
            try:
                dataset = data._open("test")
            except Exception:  # no test split: the training images
                dataset = data.train_dataset
            n = min(self.n_images, len(dataset))
            self._images = [torch.as_tensor(dataset[i][0]) for i in range(n)]
        return self._images

    def pictures(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, torch.Tensor]:
        meta = pl_module.checkpoint_metadata()
        images = self._pick_images(trainer)
        out: dict[str, torch.Tensor] = {}
        was_training = pl_module.training
        pl_module.eval()
        try:
            backbone = pl_module.eval_module()
            if backbone.is_vit:
                out["attention"] = attention_panels(backbone, images, int(meta["image_size"]),
                                                    meta["mean"], meta["std"], self.threshold)  # fmt: skip
            if hasattr(pl_module, "reconstruct"):
                from selfsup.viz.reconstruct import reconstruction_rows

                panels, _ = reconstruction_rows(pl_module, meta, images)
                rgb = panels if panels.shape[2] == 3 else panels.expand(-1, -1, 3, -1, -1)
                out["reconstruction"] = make_grid(rgb.flatten(0, 1).cpu(), nrow=3, padding=2,
                                                  pad_value=1.0)  # fmt: skip
        finally:
            pl_module.train(was_training)
        return out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs <= 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not trainer.is_global_zero:
            return
        pictures = self.pictures(trainer, pl_module)
        if not pictures:
            return
        from pytorch_lightning.loggers import WandbLogger

        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        for name, grid in pictures.items():
            array = (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8")
            if wandb_loggers:
                for logger in wandb_loggers:
                    logger.log_image(key=f"pictures/{name}", images=[array],
                                     step=trainer.global_step,
                                     caption=[f"epoch {trainer.current_epoch}"])  # fmt: skip
            else:
                from PIL import Image

                folder = RunDir(trainer.default_root_dir).pictures
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / f"{name}-epoch{trainer.current_epoch:04d}.png")
