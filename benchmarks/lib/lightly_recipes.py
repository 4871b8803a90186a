"""lightly's reference recipes as LightningModules, the comparison side of the benchmarks.

Built from lightly's modules (heads, losses, masked ViT, I-JEPA blocks, momentum update)
the way lightly sets them up itself:

- SimCLR, BYOL, DINO: lightly's CIFAR-10 benchmark
  (``docs/source/getting_started/benchmarks/cifar10_benchmark.py``): lightly's CIFAR
  ResNet-18 (``ResNetGenerator("resnet-18")``), the heads and losses as there, momentum
  0.99, SGD with lr 0.06 x batch/128, momentum 0.9, weight decay 5e-4, cosine over the
  epochs. On ViT-Tiny the same heads and losses sit on timm's ViT-Tiny (patch 4).
- MAE: lightly's example (``examples/pytorch_lightning/mae.py``): timm ViT in
  ``MaskedVisionTransformerTIMM``, ``MaskedVisionTransformerDecoderTIMM``, MSE on pixel
  patches, AdamW lr 1.5e-4.
- I-JEPA: lightly's PyTorch example (lightly has no Lightning one): ``IJEPABackbone`` from
  a torchvision ViT, ``IJEPAPredictor``, linear momentum 0.996 -> 1, smooth L1, AdamW
  lr 1.5e-4, masks from ``IJEPAMaskCollator``.

Where lightly's examples fix sizes for 224 px ImageNet models (MAE's 512-wide decoder,
I-JEPA's ViT-B predictor and mask counts), the decoder, predictor and masks take
selfsup's CIFAR config's sizes, so the step comparison is between equal architectures.
lightly has no triplet recipe: selfsup's triplet is compared with lightly's SimCLR.
"""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import timm
import torch
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models import ResNetGenerator, utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, heads
from lightly.models.modules.ijepa import IJEPABackbone, IJEPAPredictor
from lightly.models.modules.masked_vision_transformer_timm import (
    MaskedVisionTransformerTIMM,
    init_weights,
)
from torch import nn
from torch.nn import functional as F

#: lightly's CIFAR-10 benchmark normalises with ImageNet's statistics.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resnet18() -> tuple[nn.Module, int]:
    resnet = ResNetGenerator("resnet-18")
    return nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1)), 512


def vit_tiny(dynamic_img_size: bool = False) -> tuple[nn.Module, int]:
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=4,
        num_classes=0,
        dynamic_img_size=dynamic_img_size,
    )
    return vit, vit.embed_dim


def make_backbone(name: str, dynamic_img_size: bool = False) -> tuple[nn.Module, int]:
    return resnet18() if name == "resnet18" else vit_tiny(dynamic_img_size)


class _CifarBenchmarkRecipe(pl.LightningModule):
    """lightly's CIFAR-10 benchmark optimiser: SGD 0.06 x batch/128, cosine over epochs."""

    def __init__(self, batch_size: int, max_epochs: int) -> None:
        super().__init__()
        self.batch_size, self.max_epochs = batch_size, max(1, max_epochs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(start_dim=1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optim = torch.optim.SGD(
            params, lr=6e-2 * self.batch_size / 128, momentum=0.9, weight_decay=5e-4
        )
        return [optim], [torch.optim.lr_scheduler.CosineAnnealingLR(optim, self.max_epochs)]


class LightlySimCLR(_CifarBenchmarkRecipe):
    def __init__(
        self, backbone: str = "resnet18", batch_size: int = 128, max_epochs: int = 200, **_: Any
    ) -> None:
        super().__init__(batch_size, max_epochs)
        self.backbone, dim = make_backbone(backbone)
        self.projection_head = heads.SimCLRProjectionHead(dim, 512, 128)
        self.criterion = NTXentLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.embed(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x0, x1 = batch[0]
        loss = self.criterion(self(x0), self(x1))
        self.log("train_loss_ssl", loss)
        return loss


class LightlyBYOL(_CifarBenchmarkRecipe):
    def __init__(
        self, backbone: str = "resnet18", batch_size: int = 128, max_epochs: int = 200, **_: Any
    ) -> None:
        super().__init__(batch_size, max_epochs)
        self.backbone, dim = make_backbone(backbone)
        self.projection_head = heads.BYOLProjectionHead(dim, 1024, 256)
        self.prediction_head = heads.BYOLPredictionHead(256, 1024, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        utils.deactivate_requires_grad(self.backbone_momentum)
        utils.deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.embed(x)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        utils.update_momentum(self.backbone, self.backbone_momentum, m=0.99)
        utils.update_momentum(self.projection_head, self.projection_head_momentum, m=0.99)
        x0, x1 = batch[0]
        p0, z0 = self(x0), self.forward_momentum(x0)
        p1, z1 = self(x1), self.forward_momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        self.log("train_loss_ssl", loss)
        return loss


class LightlyDINO(_CifarBenchmarkRecipe):
    def __init__(
        self, backbone: str = "resnet18", batch_size: int = 128, max_epochs: int = 200, **_: Any
    ) -> None:
        super().__init__(batch_size, max_epochs)
        self.backbone, dim = make_backbone(backbone, dynamic_img_size=True)
        self.head = self._head(dim)
        self.teacher_backbone = copy.deepcopy(self.backbone)
        self.teacher_head = self._head(dim)
        utils.deactivate_requires_grad(self.teacher_backbone)
        utils.deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=2048)

    @staticmethod
    def _head(dim: int) -> nn.Module:
        head = heads.DINOProjectionHead(dim, 2048, 256, 2048, batch_norm=True)
        # the benchmark's 2-layer head for CIFAR-10
        head.layers = heads.ProjectionHead(
            [(dim, 2048, nn.BatchNorm1d(2048), nn.GELU()), (2048, 256, None, None)]
        ).layers
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def forward_teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        utils.update_momentum(self.backbone, self.teacher_backbone, m=0.99)
        utils.update_momentum(self.head, self.teacher_head, m=0.99)
        views = batch[0]
        teacher_out = [self.forward_teacher(v) for v in views[:2]]
        student_out = [self(v) for v in views]
        loss = self.criterion(teacher_out, student_out, epoch=self.current_epoch)
        self.log("train_loss_ssl", loss)
        return loss


class LightlyMAE(pl.LightningModule):
    def __init__(
        self,
        decoder_dim: int = 128,
        decoder_depth: int = 4,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
        **_: Any,
    ) -> None:
        super().__init__()
        vit, _ = vit_tiny()
        self.mask_ratio = mask_ratio
        self.patch_size = vit.patch_embed.patch_size[0]
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
        )
        self.prediction_head = nn.Linear(decoder_dim, self.patch_size**2 * 3)
        self.decoder_embed.apply(init_weights)
        self.prediction_head.apply(init_weights)
        self.criterion = nn.MSELoss()

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(images=x)[:, 0]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0][0]
        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(b, self.sequence_length), mask_ratio=self.mask_ratio, device=images.device
        )
        x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        x_decode = self.decoder_embed(x_encoded)
        x_masked = x_decode.new_zeros(b, self.sequence_length, x_decode.shape[-1])
        x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_pred = self.prediction_head(utils.get_at_index(self.decoder(x_masked), idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
        return self.criterion(x_pred, target)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1.5e-4)


class LightlyIJEPA(pl.LightningModule):
    """Batches are ``IJEPAMaskCollator``'s ``(collated, masks_enc, masks_pred)``."""

    def __init__(
        self,
        predictor_dim: int = 96,
        predictor_depth: int = 4,
        predictor_heads: int = 3,
        total_steps: int = 1000,
        **_: Any,
    ) -> None:
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        vit = VisionTransformer(
            image_size=32, patch_size=4, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768
        )
        n_patches = (32 // 4) ** 2
        self.encoder = IJEPABackbone.from_vit(vit)
        # lightly's predictor maps its ``mlp_dim`` (the encoder width) to predictor_embed_dim
        self.predictor = IJEPAPredictor(
            seq_length=n_patches,
            num_layers=predictor_depth,
            num_heads=predictor_heads,
            hidden_dim=predictor_dim,
            predictor_embed_dim=predictor_dim,
            num_patches=n_patches,
            mlp_dim=192,
            dropout=0.0,
            attention_dropout=0.0,
        )
        self.target_encoder = copy.deepcopy(self.encoder)
        utils.deactivate_requires_grad(self.target_encoder)
        self.total_steps = max(1, total_steps)
        self.criterion = nn.SmoothL1Loss()

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_encoder(x).mean(dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        collated, masks_enc, masks_pred = batch
        imgs = collated[0]
        with torch.no_grad():
            h = self.target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            h = utils.apply_masks(h, masks_pred)
            h = utils.repeat_interleave_batch(h, len(imgs), repeat=len(masks_enc))
        z = self.predictor(self.encoder(imgs, masks_enc), masks_enc, masks_pred)
        return self.criterion(z, h)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        m = 0.996 + min(self.global_step, self.total_steps) * (1.0 - 0.996) / self.total_steps
        utils.update_momentum(self.encoder, self.target_encoder, m)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1.5e-4)


RECIPES = {
    "simclr": LightlySimCLR,
    "triplet": LightlySimCLR,
    "byol": LightlyBYOL,
    "dino": LightlyDINO,
    "mae": LightlyMAE,
    "ijepa": LightlyIJEPA,
}
