"""Video LookWhere pretraining: what-where distillation of a selector + extractor from frozen teachers.

The image recipe (:mod:`.distill`) in space-time: the "what" targets (CLS and every tubelet's
features) and the "where" target (attention logits over the tubelet grid) come from a frozen video
teacher (a ViViT Model 1) or, optionally, from an image teacher applied frame by frame; the losses
are the image ones (CLS MSE, tubelet MSE after the K-NN fill, KL on the selector map) and k is
drawn per step exactly as for images (:func:`.distill.draw_k`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from ..errors import ConfigError
from ..models.config import resolve_k
from ..models.distill_losses import cls_loss, map_loss, patch_loss
from ..models.knn_upsample import knn_upsample
from ..models.video_lookwhere import (
    VideoLookWhere,
    VideoLookWhereConfig,
    check_quota,
    check_tubelet_k,
    init_from_video_teacher,
    save_video_lookwhere,
    video_lookwhere_config,
)
from ..models.video_teacher import FrameTeacherConfig, VideoTeacherConfig, build_frame_teacher, build_video_teacher
from ..models.vit import gather_tokens
from .distill import PARTS, LossWeights, draw_k, export_student, map_recall
from .optim import adamw_warmup_cosine
from .safe_checkpoint import SafeCheckpointModule
from .valid import keep_valid, log_missing

SOURCES = ("video", "image")


class VideoLookWhereDistill(SafeCheckpointModule):
    """Trains a video LookWhere student to imitate frozen teachers.

    Args:
        model: student architecture (:class:`~lw_lightning.models.video_lookwhere.VideoLookWhereConfig` fields).
        teacher: the video teacher (:class:`~lw_lightning.models.video_teacher.VideoTeacherConfig`
            fields: ``checkpoint`` = a ViViT VideoClassifier ``.ckpt``); may be null when both
            ``what`` and ``where`` come from the image teacher.
        image_teacher: optional per-frame image teacher
            (:class:`~lw_lightning.models.video_teacher.FrameTeacherConfig` fields, e.g. a DINOv2
            timm name + local weights file).
        what / where: which teacher gives the CLS + tubelet targets and the attention target:
            ``video`` or ``image``.
        k_min / k_max: tubelets kept per step (counts or fractions of nt·nh·nw), one k drawn per
            step from (seed, step): identical on every DDP rank and on resume.
        val_k: k in validation (default ``k_max``).
        loss_weights: ``{cls, patch, map}``.
        patch_distill: ``upsample`` (K-NN-filled outputs vs all teacher tubelets) or ``one-to-one``.
        init_from_teacher: extractor = video teacher copy, selector = its first blocks.
        export: file written in the run directory at the end of ``fit`` (fine-tuning's
            ``model.pretrained``); null: none.
    """

    def __init__(
        self,
        model: VideoLookWhereConfig | dict,
        teacher: VideoTeacherConfig | dict | None = None,
        image_teacher: FrameTeacherConfig | dict | None = None,
        what: str = "video",
        where: str = "video",
        k_min: int | float = 0.025,
        k_max: int | float = 0.1,
        val_k: int | float | None = None,
        loss_weights: LossWeights | dict | None = None,
        patch_distill: str = "upsample",
        init_from_teacher: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.01,
        seed: int = 0,
        export: str | None = "video_lookwhere.pt",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("what", what), ("where", where)):
            if value not in SOURCES:
                raise ConfigError(f"module.{name} must be one of {SOURCES}, got {value!r}")
        if patch_distill not in ("upsample", "one-to-one"):
            raise ConfigError(f"module.patch_distill must be 'upsample' or 'one-to-one', got {patch_distill!r}")
        cfg = video_lookwhere_config(**{k: v for k, v in model.items() if k != "arch"}) if isinstance(model, dict) else model
        self.model_cfg = cfg
        n = cfg.num_tubelets
        for name, k in (("module.k_min", k_min), ("module.k_max", k_max), ("module.val_k", val_k)):
            check_tubelet_k(k, n, name)
        lo, hi = resolve_k(k_min, n), resolve_k(k_max, n)
        if lo > hi:
            raise ConfigError(f"module.k_min={k_min} keeps more tubelets ({lo}) than module.k_max={k_max} ({hi})")
        check_quota(cfg.slice_quota, cfg.grid[0], lo, "module.k_min")
        if val_k is not None:
            check_quota(cfg.slice_quota, cfg.grid[0], resolve_k(val_k, n), "module.val_k")
        self.student = VideoLookWhere(cfg)
        needs_video = "video" in (what, where) or init_from_teacher
        if needs_video and teacher is None:
            why = "module.init_from_teacher copies it" if "video" not in (what, where) else f"what={what}, where={where}"
            raise ConfigError(f"module.teacher (the video teacher) is needed: {why}")
        if "image" in (what, where) and image_teacher is None:
            raise ConfigError(f"module.image_teacher is needed: what={what}, where={where}")
        video_t = (
            build_video_teacher(VideoTeacherConfig(**teacher) if isinstance(teacher, dict) else teacher)
            if teacher is not None
            else None
        )
        image_t = None
        if image_teacher is not None and "image" in (what, where):
            image_t = build_frame_teacher(
                FrameTeacherConfig(**image_teacher) if isinstance(image_teacher, dict) else image_teacher
            )
        if video_t is not None and tuple(video_t.vivit.cfg.grid) != cfg.grid and "video" in (what, where):
            raise ConfigError(
                f"the video teacher's tubelet grid {tuple(video_t.vivit.cfg.grid)} differs from the student's {cfg.grid}: "
                "its targets would not line up (same num_frames, img_size and tubelet)"
            )
        what_t = video_t if what == "video" else image_t
        if what_t.embed_dim != cfg.embed_dim:  # type: ignore[union-attr]
            raise ConfigError(f"the {what} teacher's width {what_t.embed_dim} != the student's embed_dim {cfg.embed_dim}")  # type: ignore[union-attr]
        # kept out of the module tree: never optimised, never saved in checkpoints, not wrapped by DDP
        object.__setattr__(self, "_teachers", {"video": video_t, "image": image_t})
        if init_from_teacher:
            init_from_video_teacher(self.student, video_t.vivit)  # type: ignore[union-attr]
        self.weights = LossWeights(**loss_weights) if isinstance(loss_weights, dict) else (loss_weights or LossWeights())
        self.val_parts = torch.nn.ModuleDict({p: MeanMetric() for p in (*PARTS, "total", "map_recall", "object_recall")})
        self.val_corrupt = SumMetric()

    def teacher_targets(self, video: Tensor) -> dict[str, Tensor]:
        """``cls`` and ``patch`` from the "what" teacher, ``attn`` from the "where" teacher."""
        hp, out = self.hparams, {}
        for source in dict.fromkeys((hp.what, hp.where)):
            t = self._teachers[source]  # type: ignore[attr-defined]
            if next(t.parameters()).device != video.device:
                t.to(video.device)
            got = t(video) if source == "video" else t(video, self.model_cfg.grid, self.model_cfg.tubelet[0])
            if source == hp.what:
                out.update(cls=got["cls"], patch=got["patch"])
            if source == hp.where:
                out["attn"] = got["attn"]
        return out

    def sample_k(self, step: int) -> int:
        """The step's k: same on every rank and on resume (see :func:`.distill.draw_k`)."""
        return draw_k(self.hparams.k_min, self.hparams.k_max, self.model_cfg.num_tubelets, self.hparams.seed, step)

    def losses(self, video: Tensor, k: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Loss parts for one batch at ``k`` kept tubelets, and the tensors they came from."""
        target = self.teacher_targets(video)
        student = self.student
        sel = student.selector(video)
        keep = student.select(sel["map"].detach(), k)
        x = student.extractor(video, keep, sel["prefix"])
        tokens = x[:, student.num_prefix :]
        if self.hparams.patch_distill == "upsample":
            l_pat = patch_loss(knn_upsample(tokens, keep, self.model_cfg.grid, knn=self.model_cfg.knn), target["patch"])
        else:
            l_pat = patch_loss(tokens, gather_tokens(target["patch"], keep))
        parts = {"cls": cls_loss(x[:, 0], target["cls"]), "patch": l_pat, "map": map_loss(sel["map"], target["attn"])}
        w = self.weights
        parts["total"] = w.cls * parts["cls"] + w.patch * parts["patch"] + w.map * parts["map"]
        return parts, {"keep": keep, "teacher_attn": target["attn"], "selector_map": sel["map"]}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        k = self.sample_k(self.global_step)
        self.last_k = k  # read by callbacks and tests (every DDP rank draws the same k)
        parts, _ = self.losses(batch["video"], k)
        n = batch["video"].shape[0]
        self.log_dict({f"train/loss_{p}": parts[p] for p in PARTS}, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/loss", parts["total"], on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log("train/k", float(k), on_step=True, on_epoch=False, batch_size=n)
        return parts["total"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if "valid" in batch:  # file-backed data: count and drop the undecodable clips
            batch, dropped = keep_valid(batch)
            self.val_corrupt(dropped)
            self.log("val/corrupt_videos", self.val_corrupt, on_step=False, on_epoch=True, batch_size=1)
            if batch["video"].shape[0] == 0:
                return
        video = batch["video"]
        if video.ndim == 6:  # evaluation views [B, V, C, T, H, W]: every view is a clip to distil on
            video = video.flatten(0, 1)
        hp = self.hparams
        k = resolve_k(hp.val_k if hp.val_k is not None else hp.k_max, self.model_cfg.num_tubelets)
        parts, extra = self.losses(video, k)
        parts["map_recall"] = map_recall(extra["teacher_attn"], extra["keep"], k)
        bsz = video.shape[0]
        names = ["cls", "patch", "map", "total", "map_recall"]
        if "track" in batch and batch["video"].ndim == 5:  # synthetic motion: the target's tubelets kept
            from ..data.synthetic_motion import track_recall, track_tubelets

            target = track_tubelets(batch["track"], self.model_cfg.tubelet, self.model_cfg.grid)
            parts["object_recall"] = track_recall(extra["keep"], target)[0].mean()
            names.append("object_recall")
        for name in names:
            metric = self.val_parts[name]
            metric.update(parts[name], weight=bsz)
            key = {"total": "val/loss", "map_recall": "val/map_recall", "object_recall": "val/object_recall"}.get(
                name, f"val/loss_{name}"
            )
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=name in ("total", "map_recall"), batch_size=bsz)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Where the student looks: ``selected``, the tubelets it keeps at the validation k per
        clip (flat indices over (t, h, w), highest selector score first; of the first view when
        the data gives several, as the pictures show). Only the selector runs; ``valid`` marks
        the clips that could be decoded."""
        video = batch["video"]
        if video.ndim == 6:  # evaluation views [B, V, C, T, H, W]
            video = video[:, 0]
        sel = self.student.selector(video)
        result = {"index": batch["index"], "selected": self.student.select(sel["map"], distill_flops_k(self))}
        if "valid" in batch:
            result["valid"] = batch["valid"]
        return result

    def on_validation_epoch_end(self) -> None:
        log_missing(self, "val", "videos")

    def configure_optimizers(self):
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(self.student.named_parameters(), hp.lr, hp.weight_decay, total, hp.warmup, hp.min_lr_ratio)

    def flops_per_sample(self) -> int:
        """FLOPs of the student on one clip at its validation k (the FLOPs callback's hook)."""
        from ..flops import count_flops

        c = self.model_cfg
        video = torch.zeros(1, 3, c.num_frames, c.img_size, c.img_size, device=self.device)
        return count_flops(self.student, video, k=distill_flops_k(self))

    def example_images(self, batch: dict[str, Tensor], ncols: int = 4) -> dict[str, Any]:
        """Tag -> where the student's selector looks at its validation k (the picture callback's hook)."""
        from ..viz_video import video_lookwhere_pictures

        return video_lookwhere_pictures(self.student, batch, distill_flops_k(self), self.device)

    def on_fit_end(self) -> None:
        export_student(self, save_video_lookwhere, "video LookWhere weights")


def distill_flops_k(module: Any) -> int:
    """The k a video distillation module evaluates at (``val_k``, else ``k_max``), as a count."""
    hp = module.hparams
    return resolve_k(hp.val_k if hp.val_k is not None else hp.k_max, module.model_cfg.num_tubelets)
