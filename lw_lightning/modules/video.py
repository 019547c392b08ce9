"""Video classification with ViViT (+ TokenLearner): training, multi-view evaluation, prediction."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from ..flops import count_flops
from ..models.vivit import ViViTConfig
from ..viz import video_token_pictures
from .classification import accuracy_metrics
from .optim import param_groups, scheduled
from .safe_checkpoint import SafeCheckpointModule
from .valid import log_missing

STAGES = ("train", "val", "test")
VIEW_AVERAGES = ("softmax", "logits")
log = logging.getLogger(__name__)


class VideoClassifier(SafeCheckpointModule):
    """ViViT classifier on clips ``[B, C, T, H, W]``; evaluation batches carry views ``[B, V, C, T, H, W]``.

    Evaluation averages the softmax (or, ``view_average="logits"``, the logits as scenic's
    ``test_step``) over a video's V views (clips × crops) and logs top-1/top-5 per video (``{stage}/acc1``, ``{stage}/acc5``) and per view (``{stage}/clip_acc1``, ``…clip_acc5``).
    Videos the DataModule could not decode (``valid=False``) are excluded from accuracy and counted
    in ``{stage}/corrupt_videos``, annotated videos without a file in ``{stage}/missing_videos``;
    training logs how many corrupt videos were replaced (``train/corrupt_resampled``).

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
        view_average: ``softmax`` (mean probability over views) or ``logits`` (mean logits).

    A checkpoint written before ``model.activation`` existed was trained with exact GELU: loading
    it switches the blocks back to exact GELU (one logged line), so it computes what it learned.
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
        view_average: Literal["softmax", "logits"] = "softmax",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"module.optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if view_average not in VIEW_AVERAGES:
            raise ValueError(f"module.view_average must be one of {VIEW_AVERAGES}, got {view_average!r}")
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
        self.metrics[stage + "_"](self.video_scores(logits), label)
        self.log(f"{stage}/loss", self.losses[stage + "_"], on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=b)
        self.log_dict(self.metrics[stage + "_"], on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=b)
        self.log_dict(self.clip_metrics[stage + "_"], on_step=False, on_epoch=True, batch_size=b * v)

    def video_scores(self, logits: Tensor) -> Tensor:
        """``[B, V, K]`` view logits -> ``[B, K]`` video probabilities: the mean softmax, or the
        softmax of the mean logits."""
        if self.hparams.get("view_average", "softmax") == "logits":
            return logits.mean(1).softmax(-1)
        return logits.softmax(-1).mean(1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints from before ``model.activation`` keep the exact GELU they were trained with."""
        saved = (checkpoint.get("hyper_parameters") or {}).get("model")
        fields = saved if isinstance(saved, dict) else (vars(saved) if dataclasses.is_dataclass(saved) else None)
        if fields is None or "activation" in fields or not hasattr(self.model_cfg, "activation"):
            return  # new checkpoints, and networks without the option (video LookWhere) are as saved
        if self.model_cfg.activation != "gelu":
            log.warning(
                "checkpoint predates model.activation: it was trained with exact GELU, which is restored "
                "(model.activation=gelu; set it in the config to silence this)"
            )
            self.net.set_activation("gelu")
            self.model_cfg = self.net.cfg
        if fields.get("variant") == "factorised":
            log.warning(
                "checkpoint predates the Model 2 pooling fix (now LayerNorm, then the mean, as scenic): "
                "its outputs change; fine-tune it again"
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        log_missing(self, "val", "videos")

    def on_test_epoch_end(self) -> None:
        log_missing(self, "test", "videos")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        video = batch["video"] if batch["video"].ndim == 6 else batch["video"].unsqueeze(1)
        scores = self.video_scores(self.view_logits(video))
        score, pred = scores.max(-1)
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

    # -- hooks read by the callbacks (lw_lightning.callbacks.perf / .images) --------------------
    def flops_per_sample(self) -> int:
        """FLOPs of one forward pass on one clip of the configured size."""
        c = self.model_cfg
        return count_flops(self, torch.zeros(1, 3, c.num_frames, c.img_size, c.img_size, device=self.device))

    def example_images(self, batch: dict[str, Tensor], ncols: int = 4) -> dict[str, Image.Image]:
        """Tag -> TokenLearner maps per temporal slice of each clip in ``batch`` (empty without TokenLearner)."""
        return video_token_pictures(self.net, self.model_cfg, batch["video"].to(self.device))
