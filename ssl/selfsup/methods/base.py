"""The shared base of every method: backbone, optimiser, schedule, checkpoint metadata.

It stays small on purpose: a method adds its heads, its loss and (for
teacher-student methods) its teacher; evaluation and monitoring live elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch

import selfsup
from selfsup.backbones import Backbone, Pool
from selfsup.errors import ConfigError
from selfsup.optimizers import LARS, layer_decay_groups
from selfsup.schedules import warmup_cosine

Optimizer = Literal["sgd", "lars", "adamw"]


class SelfSupervisedMethod(pl.LightningModule):
    """Base LightningModule of the selfsup methods.

    Args:
        backbone: timm architecture, e.g. ``resnet18``, ``vit_tiny``.
        backbone_kwargs: passed to :class:`selfsup.backbones.Backbone`
            (``img_size``, ``patch_size``, ``in_chans``, ``cifar_stem``, ``pool``, ...).
        optimizer: ``sgd``, ``lars`` (:class:`selfsup.optimizers.LARS`) or ``adamw``.
        base_lr: learning rate for a global batch of 256; the run uses
            ``base_lr x global_batch / 256`` with ``global_batch = batch_size x
            devices x num_nodes x accumulate_grad_batches``, so a config keeps its
            recipe on any number of GPUs.
        weight_decay: applied to weights only; norms, biases, position embeddings
            and class tokens get none.
        weight_decay_end: if given, the weight decay follows a cosine from
            ``weight_decay`` to this value over the run (DINO and I-JEPA's ViT
            recipes: 0.04 -> 0.4); constant otherwise.
        momentum: SGD/LARS momentum. betas: AdamW betas.
        warmup_epochs: linear warm-up of the learning rate (fractions allowed).
        min_lr_ratio: the cosine schedule ends at ``min_lr_ratio x`` peak.
        batch_size: per-process batch size the learning rate scales with; ``selfsup
            pretrain`` links it from ``data.batch_size`` (LightningCLI argument linking);
            None takes it from the training DataLoader (``trainer.train_dataloader.batch_size``).
        lars_trust_coefficient: LARS's trust coefficient eta; a layer's rate is ``lr x
            eta |w| / (|g| + wd |w|)``. 1e-3 in the official SimCLR and BYOL; solo-learn's
            CIFAR recipes use 0.02 with ``lars_clip``. Weights are adapted whatever the
            weight decay; norms, biases and ViT tokens are not (SimCLR/BYOL's exclusion).
        lars_clip: solo-learn's ``clip_lr``: a layer's rate is ``min(eta |w| / (|g| + wd
            |w|), lr)`` instead, never above the global rate. Other optimizers ignore
            both, as SGD ignores ``betas`` (so ``--model.init_args.optimizer sgd``
            works on a LARS config as it stands).
        init_from: the backbone's starting weights (:mod:`selfsup.checkpoints.sources`): a
            weights file, a selfsup export, checkpoint or run directory, a timm hub
            directory, or a timm tag (``timm:vit_small_patch14_dinov2.lvd142m``); fitted
            to this backbone (image size, patch size, channels, tokens). EMA teachers start
            as exact copies; heads, projectors, predictors and decoders start fresh.
        init_strict: keys of ``init_from`` that do not fit stop the run (False: the keys
            that fit load, the rest start fresh, and the list is kept in the run directory).
        freeze_backbone_epochs: the first N epochs train the heads only: the backbone's
            weights stay as they started (ResNet BatchNorm statistics too; its gradients are
            computed and dropped, which DDP needs).
        layer_decay: ViTs: layer-wise learning-rate decay of the backbone (BEiT/MAE layer
            ids, as ``selfsup finetune``): block i of L trains at ``decay^(L + 1 - i)`` of
            the rate, the embeddings at ``decay^(L + 1)``; heads at the full rate.
    """

    #: Which backbone evaluators use by default: "student" or "teacher".
    eval_backbone: ClassVar[str] = "student"

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: Optimizer = "sgd",
        base_lr: float = 0.3,
        weight_decay: float = 1e-6,
        weight_decay_end: float | None = None,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 10.0,
        min_lr_ratio: float = 0.0,
        batch_size: int | None = None,
        lars_trust_coefficient: float = 1e-3,
        lars_clip: bool = False,
        init_from: str | None = None,
        init_strict: bool = True,
        freeze_backbone_epochs: int = 0,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if lars_trust_coefficient <= 0:
            raise ConfigError(
                f"lars_trust_coefficient is {lars_trust_coefficient}: use a positive value "
                "(1e-3 as in SimCLR and BYOL, 0.02 as in solo-learn)."
            )
        if freeze_backbone_epochs < 0 or (layer_decay is not None and not 0 < layer_decay <= 1):
            raise ConfigError(
                f"freeze_backbone_epochs {freeze_backbone_epochs}, layer_decay {layer_decay}: give "
                "0 or more epochs, and a decay in (0, 1] (0.65-0.75 as in fine-tuning) or none."
            )
        self.backbone = Backbone(backbone, **(backbone_kwargs or {}))
        if layer_decay is not None and not self.backbone.is_vit:
            raise ConfigError("layer_decay applies to ViT backbones; drop it for a ResNet.")
        self.steps_per_epoch = 1  # optimizer steps; set when the optimiser is configured
        #: Where the starting weights came from (checkpoint metadata), once loaded.
        self.init_record: dict[str, Any] | None = None
        self._init_plan: Any = None

    # -- starting weights (init_from) -------------------------------------------------
    def prepare_init(self) -> Any:
        """Read ``init_from`` and fit it to the backbone (one-line errors, before any
        training); :meth:`on_fit_start` loads it. Returns the plan, whose ``lines()`` say
        what was read and adapted."""
        from selfsup.checkpoints.sources import plan_init

        self._init_plan = plan_init(self.hparams.init_from, self.backbone.model,
                                    self.hparams.init_strict)  # fmt: skip
        return self._init_plan

    @torch.no_grad()
    def load_init_weights(self) -> None:
        """Load the prepared starting weights into the backbone (in place: optimisers and
        DDP keep their parameters), then let the method copy them (EMA teachers)."""
        plan = self._init_plan or self.prepare_init()
        target = self.backbone.model.state_dict()
        for key, value in plan.adapted.state.items():
            target[key].copy_(value.to(target[key].dtype))
        self.init_record = {**plan.source.record(), "changes": plan.adapted.changes,
                            "not_loaded": len(plan.adapted.missing) + len(plan.adapted.shapes)}  # fmt: skip
        self._init_plan = None
        self.after_init_weights()

    def after_init_weights(self) -> None:
        """Called once the backbone holds its starting weights (EMA teachers copy them)."""

    def on_fit_start(self) -> None:
        # A resumed run (ckpt_path set) has its weights from the checkpoint already.
        trainer = self.trainer
        if self.hparams.get("init_from") and trainer.ckpt_path is None and trainer.global_step == 0:
            self.load_init_weights()

    # -- frozen backbone (freeze_backbone_epochs) -----------------------------------------
    @property
    def backbone_frozen(self) -> bool:
        epochs = self.hparams.get("freeze_backbone_epochs") or 0
        return bool(self._trainer) and self.trainer.current_epoch < epochs

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.backbone_frozen:  # after Lightning's train(): BatchNorm statistics stay
            self.backbone.eval()

    def on_train_epoch_start(self) -> None:
        if not self.backbone_frozen:
            self.backbone.train()

    # -- features for evaluators and monitors --------------------------------------------
    def eval_module(self, which: Literal["student", "teacher"] | None = None) -> Backbone:
        """The backbone evaluators read: ``which`` one, else the method's own choice (the
        student's unless the method says teacher).

        Raises:
            ConfigError: ``which`` is ``teacher`` and the method has none.
        """
        if which is None:
            return (
                getattr(self, "teacher_backbone", self.backbone)
                if self.eval_backbone == "teacher"
                else self.backbone
            )
        if which == "teacher" and not hasattr(self, "teacher_backbone"):
            raise ConfigError(f"{type(self).__name__} has no teacher: read its student.")
        return self.teacher_backbone if which == "teacher" else self.backbone

    @torch.no_grad()
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, D)`` features, pooled the way the method is evaluated."""
        return self.eval_module()(x)

    # -- optimisation -----------------------------------------------------------------
    def per_process_batch_size(self) -> int:
        """``batch_size`` if given, else the training DataLoader's (set up by then)."""
        if self.hparams.batch_size is not None:
            return int(self.hparams.batch_size)
        size = getattr(self.trainer.train_dataloader, "batch_size", None)
        if size is None:
            raise ConfigError(
                "The training DataLoader has no batch_size (a batch sampler, or several loaders), "
                "so the learning rate cannot scale with it: set model.init_args.batch_size to the "
                "images per process and step."
            )
        return int(size)

    def global_batch_size(self) -> int:
        trainer = self.trainer
        return self.per_process_batch_size() * trainer.world_size * trainer.accumulate_grad_batches

    def learning_rate(self) -> float:
        return self.hparams.base_lr * self.global_batch_size() / 256

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weights with weight decay; norms, biases and the ViT's tokens and position
        embeddings without; with ``layer_decay``, the backbone's groups by layer (``lr_scale``)."""
        no_decay_names = {"pos_embed", "cls_token", "reg_token", "mask_token", "dist_token"}
        decay, no_decay, layered = [], [], []
        if self.hparams.get("layer_decay") is not None:
            wd = self.hparams.weight_decay
            layered = [{**g, "lars_adapt": g["decayed"]} for g in
                       layer_decay_groups(self.backbone.model, wd, self.hparams.layer_decay)]  # fmt: skip
        in_layers = {id(p) for g in layered for p in g["params"]}
        for name, p in self.named_parameters():
            if not p.requires_grad or id(p) in in_layers:
                continue
            if p.ndim <= 1 or name.split(".")[-1] in no_decay_names:
                no_decay.append(p)
            else:
                decay.append(p)
        # LARS adapts the groups with lars_adapt: the group decides, not its weight decay.
        wd = self.hparams.weight_decay
        return [
            {"params": decay, "weight_decay": wd, "decayed": True, "lars_adapt": True},
            {"params": no_decay, "weight_decay": 0.0, "decayed": False, "lars_adapt": False},
            *layered,
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        # The training DataLoader first: the batch size and the steps per epoch come from it.
        self.trainer.fit_loop.setup_data()  # sets num_training_batches (inf for iterable data)
        hp, lr = self.hparams, self.learning_rate()
        groups = self.parameter_groups()
        for group in groups:
            group["lr"] = lr * group.pop("lr_scale", 1.0)
        if hp.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=hp.momentum)
        elif hp.optimizer == "lars":
            eta, clip = hp.lars_trust_coefficient, hp.lars_clip
            opt = LARS(groups, lr=lr, momentum=hp.momentum, trust_coefficient=eta, clip=clip)
        else:
            opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(hp.betas))
        total = int(self.trainer.estimated_stepping_batches)
        batches = self.trainer.num_training_batches
        accumulate = self.trainer.accumulate_grad_batches
        steps_per_epoch = max(1, int(batches) // accumulate) if math.isfinite(batches) else total
        warmup = min(round(hp.warmup_epochs * steps_per_epoch), total // 2)
        self.steps_per_epoch = steps_per_epoch

        def factor(step: int) -> float:
            return warmup_cosine(step, total, warmup, 1.0, hp.min_lr_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def weight_decay_at(self, step: int) -> float:
        hp = self.hparams
        if hp.weight_decay_end is None:
            return hp.weight_decay
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return warmup_cosine(step, total, 0, hp.weight_decay, hp.weight_decay_end)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.backbone_frozen:  # the optimisers skip parameters without a gradient
            for p in self.backbone.parameters():
                p.grad = None
        if self.hparams.weight_decay_end is not None:
            wd = self.weight_decay_at(self.global_step)
            for group in optimizer.param_groups:
                if group.get("decayed"):
                    group["weight_decay"] = wd
            self.log("train/weight_decay", wd)

    # -- what the method needs from the training DataLoader -----------------------------
    def train_collate_fn(self) -> Callable[[list], Any] | None:
        """What this method needs from the training DataLoader: its collate function, or
        None for PyTorch's default. The run assembly installs it
        (``datamodule.collate_fn = model.train_collate_fn()``); a method never reaches
        into the DataModule itself."""
        return None

    def check_view_size(self, size: int) -> None:
        """Raise a ConfigError when the method cannot train on views of ``size`` px
        (beyond what the backbone checks; MAE and I-JEPA need their built size)."""

    # -- collapse monitor (selfsup.train.collapse_monitor reads these) ---------------
    #: One sentence on what usually prevents collapse for this method (in the warning).
    collapse_hint: ClassVar[str] = "lower the learning rate or lengthen its warm-up"

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Stop at once on a NaN or infinite loss, before its gradients touch the weights:
        the weights (and every checkpoint) stay at the last finite state. All processes
        agree (one scalar all-reduce per step), so none waits for a dead peer."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.trainer.world_size > 1:
            bad = self.all_gather(bad).max()
        if bad.item() > 0:
            self._stop_on_nonfinite(loss)

    def _stop_on_nonfinite(self, loss: torch.Tensor) -> None:
        from selfsup.errors import TrainingStopped

        trainer = self.trainer
        temperatures = {k: v for k, v in self.hparams.items() if "temp" in k and v is not None}
        hints = [
            f"a lower learning rate (base_lr {self.hparams.get('base_lr')}) or a longer warm-up"
        ]
        if str(trainer.precision) not in ("32", "32-true", "64", "64-true"):
            hints.append(f"--trainer.precision 32 (now {trainer.precision})")
        if temperatures:
            listed = ", ".join(f"{k} {v}" for k, v in temperatures.items())
            hints.append(f"a higher temperature ({listed})")
        raise TrainingStopped(
            f"The loss is {loss.item()} at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}): training stopped before the weights took a non-finite "
            f"update; the checkpoints hold the last finite state. Try {'; or '.join(hints)}."
        )

    def collapse_symptom(self, stats: dict[str, float]) -> str | None:
        """The method's own collapse signature in ``stats`` (DINO: entropy and KL), or None."""
        return None

    # -- checkpoint metadata -------------------------------------------------------------
    #: The training view pipeline (its size and normalisation are the evaluators'), set by
    #: the run assembly (selfsup.train.run) rather than read from a DataModule.
    data_view: Any = None

    def checkpoint_metadata(self) -> dict[str, Any]:
        """What an evaluator needs to rebuild the backbone without importing the method.

        Plain types only, so ``torch.load(weights_only=True)`` reads it.
        """
        transform = self.data_view
        backbone = self.backbone
        pool: Pool = backbone.pool
        return {
            "version": selfsup.__version__,
            "method": type(self).__name__,
            "backbone": backbone.name,
            "backbone_kwargs": dict(self.hparams.backbone_kwargs or {}),
            "image_size": int(transform.size) if transform is not None else int(backbone.img_size),
            "in_chans": int(backbone.in_chans),
            "mean": [float(m) for m in transform.mean] if transform is not None else None,
            "std": [float(s) for s in transform.std] if transform is not None else None,
            "pool": pool,
            "student_prefix": "backbone.",
            "teacher_prefix": "teacher_backbone." if hasattr(self, "teacher_backbone") else None,
            "eval_backbone": self.eval_backbone,
            "init_from": self.init_record,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["selfsup"] = self.checkpoint_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.init_record = (checkpoint.get("selfsup") or {}).get("init_from")
