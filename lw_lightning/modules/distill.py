"""LookWhere pretraining: what-where distillation of a selector + extractor from a frozen teacher."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from ..flops import count_flops
from ..models.checkpoint import init_from_teacher as copy_teacher_weights
from ..models.checkpoint import save_official
from ..models.config import ModelConfig, check_k, model_config, resolve_k
from ..models.distill_losses import cls_loss, map_loss, patch_loss
from ..models.knn_upsample import knn_upsample
from ..models.lookwhere import LookWhere
from ..models.teacher import Teacher, TeacherConfig, build_teacher
from ..models.vit import gather_tokens
from ..viz import image_model_pictures
from .optim import adamw_warmup_cosine
from .safe_checkpoint import SafeCheckpointModule
from .valid import keep_valid, log_missing

PARTS = ("cls", "patch", "map")


@dataclass
class LossWeights:
    """Weights of L_cls, L_pat and L_map (paper: 1 / 1 / 0.1)."""

    cls: float = 1.0
    patch: float = 1.0
    map: float = 0.1


def draw_k(k_min: int | float, k_max: int | float, n: int, seed: int, step: int) -> int:
    """The k of training step ``step``: uniform in [k_min, k_max] (counts or fractions of ``n``)
    from a generator seeded by (seed, step), so every DDP rank draws the same k without
    communicating, and a resumed run draws the k the interrupted one would have."""
    lo, hi = resolve_k(k_min, n), resolve_k(k_max, n)
    if lo > hi:
        raise ValueError(f"k_min ({lo}) > k_max ({hi})")
    return random.Random(seed * 1_000_003 + step).randint(lo, hi)


def map_recall(teacher_attn: Tensor, keep: Tensor, k: int) -> Tensor:
    """ "Where" quality: the share of the teacher's top-k attention positions among the kept ones."""
    top_t = teacher_attn.topk(k, dim=1).indices
    hit = torch.zeros_like(teacher_attn, dtype=torch.bool).scatter(1, keep, True)
    return hit.gather(1, top_t).float().mean()


def export_student(module: pl.LightningModule, save: Callable[[Any, Path], Path], what: str) -> None:
    """At the end of ``fit``: ``save(module.student, <run dir>/<hparams.export>)`` on global rank 0
    (nothing for ``export: null`` or a fast_dev_run)."""
    trainer = module.trainer
    if not module.hparams.export or trainer.fast_dev_run:
        return
    log_dir = trainer.log_dir  # a broadcast under DDP: read it on every rank
    if trainer.is_global_zero and log_dir:
        path = save(module.student, Path(log_dir) / module.hparams.export)
        rank_zero_info(f"exported {what}: {path}")


class LookWhereDistill(SafeCheckpointModule):
    """Trains a LookWhere student to imitate a frozen teacher.

    Args:
        model: student architecture (ModelConfig fields; ``arch`` must be ``lookwhere``).
        teacher: where the frozen teacher comes from (:class:`TeacherConfig` fields).
        k_min / k_max: range of patches kept per step (counts or fractions); one k is drawn per
            step from a generator seeded by (seed, step): identical on every DDP rank and on resume.
        val_k: k used in validation (default ``k_max``).
        loss_weights: ``{cls, patch, map}``.
        patch_distill: ``upsample`` (K-NN-filled outputs vs all N teacher tokens) or ``one-to-one``
            (kept positions only).
        init_from_teacher: extractor = teacher copy, selector = its first blocks (paper recipe).
        export: file name written in the run directory at the end of ``fit``, in the official
            LookWhere layout (feed it to fine-tuning as ``model.pretrained``); null: no export.
    """

    def __init__(
        self,
        model: ModelConfig | dict,
        teacher: TeacherConfig | dict,
        k_min: int | float = 16,
        k_max: int | float = 128,
        val_k: int | float | None = None,
        loss_weights: LossWeights | dict | None = None,
        patch_distill: str = "upsample",
        init_from_teacher: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.01,
        seed: int = 0,
        export: str | None = "lookwhere.pt",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if patch_distill not in ("upsample", "one-to-one"):
            raise ValueError(f"module.patch_distill must be 'upsample' or 'one-to-one', got {patch_distill!r}")
        self.model_cfg = model_config(**model) if isinstance(model, dict) else model
        if self.model_cfg.arch != "lookwhere":
            raise ValueError("distillation trains a LookWhere student: set module.model.arch=lookwhere")
        n = self.model_cfg.grid[0] * self.model_cfg.grid[1]
        for name, k in (("module.k_min", k_min), ("module.k_max", k_max), ("module.val_k", val_k)):
            check_k(k, n, name)
        if resolve_k(k_min, n) > resolve_k(k_max, n):
            raise ValueError(
                f"module.k_min={k_min} keeps more patches ({resolve_k(k_min, n)}) than module.k_max={k_max} ({resolve_k(k_max, n)})"
            )
        self.student = LookWhere(self.model_cfg)
        teacher_cfg = TeacherConfig(**teacher) if isinstance(teacher, dict) else teacher
        t = build_teacher(teacher_cfg)
        if t.embed_dim != self.model_cfg.embed_dim:
            raise ValueError(f"teacher width {t.embed_dim} != student width {self.model_cfg.embed_dim}")
        # kept out of the module tree: never optimised, never saved in checkpoints, not wrapped by DDP
        object.__setattr__(self, "_teacher", t)
        if init_from_teacher:
            copy_teacher_weights(self.student, t.vit)
        self.weights = LossWeights(**loss_weights) if isinstance(loss_weights, dict) else (loss_weights or LossWeights())
        self.val_parts = torch.nn.ModuleDict({p: MeanMetric() for p in (*PARTS, "total", "map_recall")})
        self.val_corrupt = SumMetric()  # unreadable validation images, excluded (see modules/valid.py)

    @property
    def teacher(self) -> Teacher:
        return self._teacher  # type: ignore[attr-defined]

    def teacher_targets(self, images: Tensor) -> dict[str, Tensor]:
        t = self.teacher
        if next(t.parameters()).device != images.device:
            t.to(images.device)
        return t(images)

    def sample_k(self, n: int, step: int) -> int:
        """The step's k: same on every rank (seeded by step, no communication)."""
        return draw_k(self.hparams.k_min, self.hparams.k_max, n, self.hparams.seed, step)

    def losses(self, images: Tensor, k: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Loss parts for one batch at ``k`` kept patches, and the tensors they came from."""
        target = self.teacher_targets(images)
        student = self.student
        grid = student.grid(images)
        sel = student.selector(images, grid)
        keep = student.select(sel["map"].detach(), k)
        x = student.extractor(images, keep, sel["prefix"])
        tokens = x[:, student.num_prefix :]
        if self.hparams.patch_distill == "upsample":
            l_pat = patch_loss(
                knn_upsample(tokens, keep, grid, knn=self.model_cfg.knn, tie_break=self.model_cfg.knn_tie_break), target["patch"]
            )
        else:
            l_pat = patch_loss(tokens, gather_tokens(target["patch"], keep))
        parts = {"cls": cls_loss(x[:, 0], target["cls"]), "patch": l_pat, "map": map_loss(sel["map"], target["attn"])}
        w = self.weights
        parts["total"] = w.cls * parts["cls"] + w.patch * parts["patch"] + w.map * parts["map"]
        return parts, {"keep": keep, "teacher_attn": target["attn"], "selector_map": sel["map"]}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images = batch["image"]
        n = self.student.grid(images)
        k = self.sample_k(n[0] * n[1], self.global_step)
        self.last_k = k  # read by callbacks and tests (e.g. that every DDP rank drew the same k)
        parts, _ = self.losses(images, k)
        self.log_dict({f"train/loss_{p}": parts[p] for p in PARTS}, on_step=True, on_epoch=False)
        self.log("train/loss", parts["total"], on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/k", float(k), on_step=True, on_epoch=False)
        return parts["total"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if "valid" in batch:  # file-backed data: count and drop the unreadable samples
            batch, dropped = keep_valid(batch)
            self.val_corrupt(dropped)
            self.log("val/corrupt_images", self.val_corrupt, on_step=False, on_epoch=True, batch_size=1)
            if batch["image"].shape[0] == 0:
                return
        images = batch["image"]
        k = self._eval_k(images)
        parts, extra = self.losses(images, k)
        parts["map_recall"] = map_recall(extra["teacher_attn"], extra["keep"], k)
        bsz = images.shape[0]
        for name, metric in self.val_parts.items():
            metric.update(parts[name], weight=bsz)
            key = "val/loss" if name == "total" else ("val/map_recall" if name == "map_recall" else f"val/loss_{name}")
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=name in ("total", "map_recall"))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Where the student looks: ``selected``, the patches it keeps at the validation k per
        image (flat row-major indices, highest selector score first). Only the selector runs;
        ``valid`` marks the files that could be decoded."""
        images = batch["image"]
        sel = self.student.selector(images, self.student.grid(images))
        result = {"index": batch["index"], "selected": self.student.select(sel["map"], self._eval_k(images))}
        if "valid" in batch:
            result["valid"] = batch["valid"]
        return result

    def on_validation_epoch_end(self) -> None:
        log_missing(self, "val", "images")

    def configure_optimizers(self):
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(self.student.named_parameters(), hp.lr, hp.weight_decay, total, hp.warmup, hp.min_lr_ratio)

    # -- hooks read by the callbacks (lw_lightning.callbacks.perf / .images) --------------------
    def _eval_k(self, images: Tensor) -> int:
        g = self.student.grid(images)
        return resolve_k(self.hparams.val_k if self.hparams.val_k is not None else self.hparams.k_max, g[0] * g[1])

    def flops_per_sample(self) -> int:
        """FLOPs of the student's forward pass on one image of the configured size, at the validation k."""
        images = torch.zeros(1, 3, *self.model_cfg.img_size, device=self.device)
        return count_flops(self.student, images, k=self._eval_k(images))

    def example_images(self, batch: dict[str, Tensor], ncols: int = 4) -> dict[str, Image.Image]:
        """Tag -> picture of the student's selections on ``batch`` at the validation k."""
        images = batch["image"].to(self.device)
        return image_model_pictures(self.student, images, k=self._eval_k(images), boxes=batch.get("box"), ncols=ncols)

    def on_fit_end(self) -> None:
        export_student(self, save_official, "LookWhere weights (official layout)")
