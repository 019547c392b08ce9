"""Semantic segmentation with LookWhere (dense = K-NN-filled extractor tokens) or the full-res ViT."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..flops import count_flops
from ..models.checkpoint import load_pretrained, resolved_model_config
from ..models.config import ModelConfig, check_k, model_config
from ..models.lookwhere import LookWhere, build_model
from ..viz import image_model_pictures
from .optim import adamw_warmup_cosine
from .safe_checkpoint import SafeCheckpointModule
from .valid import keep_valid, log_missing


class Segmenter(SafeCheckpointModule):
    """Per-patch linear head on dense features; logits bilinearly upsampled to the label size.

    Loss: cross-entropy with ``ignore_index``. Metric: mIoU over the whole dataset
    (``MulticlassJaccardIndex``, macro over classes, accumulated confusion matrix) and pixel acc.

    Batches carry ``mask`` (B,H,W) long, or ``masks``: a list of per-image (H_i,W_i) labels at
    their original sizes (evaluation of variable-size images: logits are resized per image, after
    cropping them to ``image_size[i]``, the valid region of a bottom/right-padded input).

    Evaluation samples the DataModule could not decode (``valid=False``) are excluded from mIoU,
    pixel accuracy and loss, and counted in ``{stage}/corrupt_images`` (annotated images without a
    file: ``{stage}/missing_images``); ``predict`` gives them no mask (:meth:`predict_step`).

    Args mirror :class:`~lw_lightning.modules.classification.ImageClassifier`; ``freeze_backbone``
    trains the head only (linear probe).
    """

    def __init__(
        self,
        model: ModelConfig | dict,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.01,
        train_k: int | float | None = None,
        eval_k: int | float | None = None,
        freeze_selector: bool = True,
        freeze_backbone: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = model_config(**model) if isinstance(model, dict) else model
        self.model_cfg = resolved_model_config(self.model_cfg, self.hparams)
        if self.model_cfg.arch == "tokenlearner":  # S learned tokens have no place on the patch grid
            raise ValueError("segmentation needs per-patch features: model.arch must be lookwhere or vit, not tokenlearner")
        self.net = build_model(self.model_cfg)
        if isinstance(self.net, LookWhere):  # k is ignored by the full-res ViT
            n = self.model_cfg.grid[0] * self.model_cfg.grid[1]
            for name, k in (("module.model.k", self.model_cfg.k), ("module.train_k", train_k), ("module.eval_k", eval_k)):
                check_k(k, n, name)
        if self.model_cfg.pretrained:
            load_pretrained(self.net, self.model_cfg.pretrained, name=self.model_cfg.pretrained_name)
        if freeze_backbone:
            self.net.requires_grad_(False)
        elif freeze_selector and isinstance(self.net, LookWhere):
            self.net.selector.requires_grad_(False)
        self.head = nn.Conv2d(self.model_cfg.embed_dim, num_classes, kernel_size=1)  # per-patch linear
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        metric = lambda: MulticlassJaccardIndex(num_classes, ignore_index=ignore_index, average="macro")  # noqa: E731
        pix = lambda: MulticlassAccuracy(num_classes, ignore_index=ignore_index, average="micro")  # noqa: E731
        self.val_miou, self.test_miou = metric(), metric()
        self.val_pixacc, self.test_pixacc = pix(), pix()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_corrupt, self.test_corrupt = SumMetric(), SumMetric()

    def forward(self, images: Tensor, k: int | float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Patch-grid logits (B, C, gh, gw) and the backbone's outputs."""
        if isinstance(self.net, LookWhere):
            if self.hparams.freeze_selector or self.hparams.freeze_backbone:
                self.net.selector.eval()
            out = self.net(images, k=k, dense=True)
        else:
            out = self.net(images, dense=True)
        return self.head(out["dense"]), out

    @staticmethod
    def _resized(logits: Tensor, batch: dict, i: int, size: tuple[int, int]) -> Tensor:
        """Image ``i``'s logits (1, C, *size): cropped to its valid region when it was padded
        bottom/right inside the batch, then resized (bilinear)."""
        li = logits[i : i + 1].float()
        padded = batch["image"].shape[-2:]
        if "image_size" in batch and tuple(batch["image_size"][i].tolist()) != tuple(padded):
            h, w = (int(v) for v in batch["image_size"][i])
            li = F.interpolate(li, size=padded, mode="bilinear", align_corners=False)[..., :h, :w]
        return F.interpolate(li, size=size, mode="bilinear", align_corners=False)

    def _loss_and_preds(self, logits: Tensor, batch: dict) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Upsample logits to label size; CE over labelled pixels; (pred, target) pairs."""
        ignore = self.hparams.ignore_index
        if "masks" in batch:
            pairs, total, count = [], logits.new_zeros((), dtype=torch.float32), 0
            for i, mask in enumerate(batch["masks"]):
                up = self._resized(logits, batch, i, tuple(mask.shape[-2:]))
                valid = int((mask != ignore).sum())
                if valid:
                    total = total + F.cross_entropy(up, mask.unsqueeze(0), ignore_index=ignore, reduction="sum")
                    count += valid
                pairs.append((up.argmax(1), mask.unsqueeze(0)))
            return total / max(count, 1), pairs
        mask = batch["mask"]
        up = F.interpolate(logits.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(up, mask, ignore_index=ignore)
        return loss, [(up.argmax(1), mask)]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits, _ = self(batch["image"], k=self.hparams.train_k)
        loss, _ = self._loss_and_preds(logits, batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        if "valid" in batch:  # file-backed data: count and drop the unreadable samples
            corrupt = self.val_corrupt if stage == "val" else self.test_corrupt
            batch, dropped = keep_valid(batch)
            corrupt(dropped)
            self.log(f"{stage}/corrupt_images", corrupt, on_step=False, on_epoch=True, batch_size=1)
            if batch["image"].shape[0] == 0:
                return
        logits, _ = self(batch["image"], k=self.hparams.eval_k)
        loss, pairs = self._loss_and_preds(logits, batch)
        miou, pixacc, mean_loss = (
            (self.val_miou, self.val_pixacc, self.val_loss)
            if stage == "val"
            else (self.test_miou, self.test_pixacc, self.test_loss)
        )
        for pred, target in pairs:
            miou.update(pred, target)
            pixacc.update(pred, target)
        # the loss is a mean over labelled pixels: weight it by their count, so the epoch value is
        # the dataset's per-pixel mean whatever the batching or DDP sharding
        masks = batch["masks"] if "masks" in batch else [batch["mask"]]
        labelled = sum(int((m != self.hparams.ignore_index).sum()) for m in masks)
        if labelled:
            mean_loss.update(loss, weight=labelled)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/miou", miou, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/pixel_acc", pixacc, on_step=False, on_epoch=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """``masks``: per image the argmax of the logits, resized to the image's original size
        (:meth:`original_size`), as (H, W) class indices 0..num_classes-1 on the CPU (the
        prediction writer stores them as PNGs in the dataset's own label values); None for a
        file that could not be decoded. ``selected``: LookWhere's patches at ``eval_k``."""
        logits, out = self(batch["image"], k=self.hparams.eval_k)
        valid = batch.get("valid")
        # uint8 when it fits: a batch of full-size maps is kept until the writer has saved it
        dtype = torch.uint8 if self.hparams.num_classes <= 256 else torch.int32
        masks: list[Tensor | None] = []
        for i in range(logits.shape[0]):
            if valid is not None and not bool(valid[i]):
                masks.append(None)  # its input was a placeholder: no prediction
                continue
            masks.append(self._resized(logits, batch, i, self.original_size(batch, i)).argmax(1)[0].to(dtype).cpu())
        result: dict[str, Any] = {"index": batch["index"], "masks": masks}
        if "selected" in out:
            result["selected"] = out["selected"]
        return result

    @staticmethod
    def original_size(batch: dict, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` as the dataset holds it: its label's size (ADE20K evaluation
        batches keep labels at the original resolution; the synthetic data renders images at the
        input size), else the valid region of the model's input."""
        if "label_size" in batch:
            h, w = batch["label_size"][i].tolist()
        elif "mask" in batch:
            h, w = batch["mask"].shape[-2:]
        elif "image_size" in batch:
            h, w = batch["image_size"][i].tolist()
        else:
            h, w = batch["image"].shape[-2:]
        return int(h), int(w)

    def on_validation_epoch_end(self) -> None:
        log_missing(self, "val", "images")

    def on_test_epoch_end(self) -> None:
        log_missing(self, "test", "images")

    def configure_optimizers(self):
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(self.named_parameters(), hp.lr, hp.weight_decay, total, hp.warmup, hp.min_lr_ratio)

    # -- hooks read by the callbacks (lw_lightning.callbacks.perf / .images) --------------------
    def flops_per_sample(self) -> int:
        """FLOPs of one evaluation forward pass on one image of the configured size, at ``eval_k``."""
        return count_flops(self, torch.zeros(1, 3, *self.model_cfg.img_size, device=self.device), k=self.hparams.eval_k)

    def example_images(self, batch: dict[str, Tensor], ncols: int = 4) -> dict[str, Image.Image]:
        """Tag -> picture of where the model looks on ``batch`` (selections at ``eval_k``, token maps)."""
        images = batch["image"].to(self.device)
        return image_model_pictures(self.net, images, k=self.hparams.eval_k, boxes=batch.get("box"), ncols=ncols)
