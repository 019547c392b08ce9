"""Video classification with ViViT (+ TokenLearner): training, multi-view evaluation, prediction."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from ..models.vivit import ViViTConfig
from .classification import accuracy_metrics
from .optim import param_groups, scheduled

STAGES = ("train", "val", "test")


class VideoClassifier(pl.LightningModule):
    """ViViT classifier on clips ``[B, C, T, H, W]``; evaluation batches carry views ``[B, V, C, T, H, W]``.

    Evaluation averages the softmax over a video's V views (clips × crops) and logs top-1/top-5 per
    video (``{stage}/acc1``, ``{stage}/acc5``) and per view (``{stage}/clip_acc1``, ``…clip_acc5``).
    Videos the DataModule could not decode (``valid=False``) are excluded from accuracy and counted
    in ``{stage}/corrupt_videos``; training logs how many corrupt videos were replaced
    (``train/corrupt_resampled``).

    Args:
        model: :class:`~lw_lightning.models.vivit.ViViTConfig` fields, e.g. ``{preset: base, num_tokens: 8}``;
            ``pretrained`` may be a ViViT VideoClassifier ``.ckpt`` (its weights, TokenLearner new).
        num_classes: filled from the DataModule when left out of the config.
        optimizer: ``sgd`` (momentum, ViViT's recipe) or ``adamw``.
        lr / momentum / weight_decay: peak LR; SGD momentum; decay on weight matrices only.
        warmup: warmup steps (int) or fraction of the run (float < 1), then per-step cosine to
            ``min_lr_ratio · lr``.
        label_smoothing: cross-entropy label smoothing.
        eval_chunk: views per forward pass in evaluation (bounds memory for 4×3-view tests);
            None: the whole batch at once.
    """

    def __init__(
        self,
        model: ViViTConfig | dict,
        num_classes: int,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.0,
        eval_chunk: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"module.optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        self.model_cfg, self.net = self.build_net(model, num_classes)
        # one metric object per stage (keys must not shadow nn.Module.train, hence the suffix)
        self.metrics = torch.nn.ModuleDict({f"{s}_": accuracy_metrics(num_classes, f"{s}/") for s in STAGES})
        self.clip_metrics = torch.nn.ModuleDict({f"{s}_": accuracy_metrics(num_classes, f"{s}/clip_") for s in ("val", "test")})
        self.losses = torch.nn.ModuleDict({f"{s}_": MeanMetric() for s in STAGES})
        self.corrupt = torch.nn.ModuleDict({f"{s}_": SumMetric() for s in STAGES})

    def build_net(self, model: ViViTConfig | dict, num_classes: int) -> tuple[ViViTConfig, torch.nn.Module]:
        """(config, network): a ViViT; ``model.pretrained`` may also be a ViViT VideoClassifier
        ``.ckpt`` to start from (:func:`~lw_lightning.models.video_checkpoint.build_vivit`).
        Subclasses (video LookWhere fine-tuning) build other networks."""
        from ..models.video_checkpoint import build_vivit

        return build_vivit(model, num_classes)

    def forward(self, video: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for clips ``[B, C, T, H, W]``."""
        return self.net(video)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch["video"]).float()
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)
        n = batch["label"].shape[0]
        self.losses["train_"](loss, weight=n)
        self.metrics["train_"](logits, batch["label"])
        self.corrupt["train_"](batch["resampled"].sum() if "resampled" in batch else 0)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log_dict(self.metrics["train_"], on_step=False, on_epoch=True, batch_size=n)
        self.log("train/corrupt_resampled", self.corrupt["train_"], on_step=False, on_epoch=True, batch_size=n)
        return loss

    def view_logits(self, views: Tensor) -> Tensor:
        """``[B, V, C, T, H, W]`` -> logits ``[B, V, K]`` (in chunks of ``eval_chunk`` views)."""
        b, v = views.shape[:2]
        flat = views.flatten(0, 1)
        chunk = self.hparams.eval_chunk or flat.shape[0]
        logits = torch.cat([self(part).float() for part in flat.split(chunk)])
        return logits.view(b, v, -1)

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        video, label = batch["video"], batch["label"]
        if video.ndim == 5:  # a single clip per video
            video = video.unsqueeze(1)
        valid = batch.get("valid", torch.ones_like(label, dtype=torch.bool))
        self.corrupt[stage + "_"]((~valid).sum())
        self.log(f"{stage}/corrupt_videos", self.corrupt[stage + "_"], on_step=False, on_epoch=True, batch_size=label.shape[0])
        if not bool(valid.any()):
            return
        video, label = video[valid], label[valid]
        logits = self.view_logits(video)
        b, v, k = logits.shape
        per_view_label = label.repeat_interleave(v)
        loss = F.cross_entropy(logits.view(b * v, k), per_view_label, label_smoothing=self.hparams.label_smoothing)
        probs = logits.softmax(-1)
        self.losses[stage + "_"](loss, weight=b)
        self.clip_metrics[stage + "_"](probs.view(b * v, k), per_view_label)
        self.metrics[stage + "_"](probs.mean(1), label)  # video score = mean softmax over its views
        self.log(f"{stage}/loss", self.losses[stage + "_"], on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=b)
        self.log_dict(self.metrics[stage + "_"], on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=b)
        self.log_dict(self.clip_metrics[stage + "_"], on_step=False, on_epoch=True, batch_size=b * v)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        video = batch["video"] if batch["video"].ndim == 6 else batch["video"].unsqueeze(1)
        probs = self.view_logits(video).softmax(-1).mean(1)
        score, pred = probs.max(-1)
        valid = batch.get("valid", torch.ones_like(pred, dtype=torch.bool))
        pred = torch.where(valid, pred, torch.full_like(pred, -1))  # undecodable: no prediction
        return {"index": batch["index"], "label": batch["label"], "pred": pred, "score": score * valid}

    def configure_optimizers(self):
        groups = param_groups(self.named_parameters(), self.hparams.weight_decay)
        if self.hparams.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=self.hparams.lr, momentum=self.hparams.momentum)
        else:
            optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=(0.9, 0.999))
        return scheduled(optimizer, int(self.trainer.estimated_stepping_batches), self.hparams.warmup, self.hparams.min_lr_ratio)
