"""A ViViT classifier with dense supervision: every tubelet token also predicts the class under it.

The video analogue of ``ImageClassifier.patch_loss_weight`` (the image demo's teacher): trained on
the clip label alone, a small from-scratch ViViT sits at chance while it searches for a target
that covers a few of hundreds of tubelets; labelling each tubelet with the class of the target
it shows (0: background), from the synthetic motion data's ``track``, gives its tokens localised
features within a CPU budget, as large-scale pretraining gives a real teacher. Only training uses
the extra loss; evaluation, prediction and checkpoints are :class:`~.video.VideoClassifier`'s.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..models.vivit import ViViTConfig
from .video import VideoClassifier


class DenseVideoClassifier(VideoClassifier):
    """:class:`~.video.VideoClassifier` (ViViT, no TokenLearner) + a per-tubelet cross-entropy.

    Args:
        tubelet_loss_weight: weight of the per-tubelet loss (a linear ``tubelet_head`` on the
            final tubelet tokens, ``num_classes + 1`` outputs: 0 = background, c + 1 = class c).
        Other arguments: :class:`~.video.VideoClassifier`'s.
    """

    def __init__(
        self,
        model: ViViTConfig | dict,
        num_classes: int,
        optimizer: Literal["sgd", "adamw"] = "adamw",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.05,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        eval_chunk: int | None = None,
        tubelet_loss_weight: float = 1.0,
    ) -> None:
        super().__init__(
            model, num_classes, optimizer, lr, momentum, weight_decay, warmup, min_lr_ratio, label_smoothing, eval_chunk
        )
        if tubelet_loss_weight < 0:
            raise ConfigError(f"module.tubelet_loss_weight must be >= 0, got {tubelet_loss_weight}")
        cfg = self.model_cfg
        if cfg.variant != "joint" or cfg.num_tokens:
            raise ConfigError(
                "module.tubelet_loss_weight needs a ViViT Model 1 without TokenLearner (every tubelet token is supervised)"
            )
        self.tubelet_head = nn.Linear(cfg.embed_dim, num_classes + 1)
        nn.init.trunc_normal_(self.tubelet_head.weight, std=0.02)
        nn.init.zeros_(self.tubelet_head.bias)

    def tubelet_targets(self, track: Tensor, label: Tensor) -> Tensor:
        """(B, nt·nh·nw) targets: the clip's class + 1 where the target is, else 0."""
        from ..data.synthetic_motion import track_tubelets

        where = track_tubelets(track, self.model_cfg.tubelet, self.model_cfg.grid)
        return torch.where(where, label.unsqueeze(1) + 1, 0)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "track" not in batch:
            raise ConfigError("module.tubelet_loss_weight needs batches with a 'track' (the synthetic motion data)")
        video, label = batch["video"], batch["label"]
        x = self.net.forward_features(video)
        p = int(getattr(self.model_cfg, "num_prefix", 0))  # a CLS token (classifier: token) comes first
        pooled = x[:, 0] if p else x.mean(dim=1)
        logits = self.net.head(pooled).float()
        loss = F.cross_entropy(logits, label, label_smoothing=self.hparams.label_smoothing)
        dense = self.tubelet_head(x[:, p:]).float()
        tubelet_loss = F.cross_entropy(dense.flatten(0, 1), self.tubelet_targets(batch["track"], label).flatten())
        total = loss + self.hparams.tubelet_loss_weight * tubelet_loss
        n = label.shape[0]
        self.losses["train_"](loss, weight=n)
        self.metrics["train_"](logits, label)
        self.log("train/loss", total, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log("train/tubelet_loss", tubelet_loss, on_step=True, on_epoch=False, batch_size=n)
        self.log_dict(self.metrics["train_"], on_step=False, on_epoch=True, batch_size=n)
        return total
