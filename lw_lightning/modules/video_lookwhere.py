"""Video LookWhere fine-tuning for classification: :class:`VideoClassifier` with a LookWhere net.

Training, multi-view evaluation (softmax averaged over a video's views), corrupt-video counting,
prediction and the optimiser are :class:`~.video.VideoClassifier`'s; this class only builds
:class:`~lw_lightning.models.video_lookwhere.VideoLookWhereNet` (selector frozen by default, the
LookWhere fine-tuning protocol) and chooses how many tubelets it keeps in training / evaluation.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from ..errors import ConfigError
from ..models.config import resolve_k
from ..models.video_lookwhere import VideoLookWhereConfig, VideoLookWhereNet, check_quota, check_tubelet_k, video_lookwhere_config
from .video import VideoClassifier


class VideoLookWhereClassifier(VideoClassifier):
    """Fine-tunes a distilled video LookWhere (``model.pretrained``: ``video_lookwhere.pt``).

    Args:
        model: :class:`~lw_lightning.models.video_lookwhere.VideoLookWhereConfig` fields.
        train_k / eval_k: tubelets kept in training / evaluation and prediction (count or
            fraction; None: ``model.k``).
        freeze_selector: keep the selector (and its prefix tokens) fixed.
        Other arguments: :class:`~.video.VideoClassifier`'s (default optimiser here: AdamW).
    """

    def __init__(
        self,
        model: VideoLookWhereConfig | dict,
        num_classes: int,
        optimizer: Literal["sgd", "adamw"] = "adamw",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.05,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        eval_chunk: int | None = None,
        train_k: int | float | None = None,
        eval_k: int | float | None = None,
        freeze_selector: bool = True,
    ) -> None:
        self._freeze_selector = freeze_selector  # read by build_net, which the parent calls
        super().__init__(
            model, num_classes, optimizer, lr, momentum, weight_decay, warmup, min_lr_ratio, label_smoothing, eval_chunk
        )
        cfg = self.model_cfg
        for name, k in (("module.train_k", train_k), ("module.eval_k", eval_k)):
            check_tubelet_k(k, cfg.num_tubelets, name)
            if k is not None:
                check_quota(cfg.slice_quota, cfg.grid[0], resolve_k(k, cfg.num_tubelets), name)

    def build_net(self, model: Any, num_classes: int) -> tuple[VideoLookWhereConfig, VideoLookWhereNet]:
        if isinstance(model, dict):
            if model.get("arch", "lookwhere") != "lookwhere":
                raise ConfigError(f"module.model.arch={model['arch']!r}: VideoLookWhereClassifier trains arch 'lookwhere'")
            model = video_lookwhere_config(**{k: v for k, v in model.items() if k != "arch"})
        return model, VideoLookWhereNet(model, num_classes, freeze_selector=self._freeze_selector)

    @property
    def step_k(self) -> int | float | None:
        """The k of the current mode (None: ``model.k``)."""
        return self.hparams.train_k if self.training else self.hparams.eval_k

    def forward(self, video: Tensor) -> Tensor:
        return self.net(video, k=self.step_k)

    def example_images(self, batch: dict[str, Tensor], ncols: int = 4) -> dict[str, Any]:
        """Tag -> where the selector looks, slice by slice, at ``eval_k`` (the picture callback's hook)."""
        from ..viz_video import video_lookwhere_pictures

        return video_lookwhere_pictures(self.net.lookwhere, batch, self.hparams.eval_k, self.device)
