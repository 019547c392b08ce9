"""Image classification with LookWhere, the full-resolution ViT or the TokenLearner-ViT (linear
head on the CLS features)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from ..errors import ConfigError
from ..flops import count_flops
from ..models.checkpoint import load_pretrained, resolved_model_config
from ..models.config import ModelConfig, check_k, model_config
from ..models.lookwhere import LookWhere, build_model
from ..viz import image_model_pictures
from .optim import adamw_warmup_cosine
from .safe_checkpoint import SafeCheckpointModule
from .valid import keep_valid, log_missing


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """top-1 / top-5 accuracy over samples (``average="micro"``: the ImageNet definition)."""
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        },
        prefix=prefix,
    )


class ImageClassifier(SafeCheckpointModule):
    """Classifier on the extractor's (or full-res ViT's, or TokenLearner-ViT's) CLS features.

    Args:
        model: architecture (:class:`~lw_lightning.models.config.ModelConfig` fields, e.g.
            ``{arch: lookwhere, preset: tiny, img_size: [224, 224]}`` or
            ``{arch: tokenlearner, preset: vit_b16, tokenlearner_loc: 0.25, tokenlearner_tokens: 8}``).
        num_classes: filled from the DataModule when left out of the config.
        lr / weight_decay: AdamW peak learning rate and decay (weight matrices only).
        warmup: warmup steps (int) or fraction of the run (float < 1), then cosine to
            ``min_lr_ratio * lr``; stepped every optimizer step.
        label_smoothing / class_weights: cross-entropy options.
        train_k / eval_k: patches kept by LookWhere in training / evaluation (count or fraction;
            None: ``model.k``). Ignored by the full-res ViT.
        eval_ks: extra k values evaluated in the same validation/test pass (the selector runs
            once); logs ``val/acc1_k/<k>`` and an accuracy-vs-k figure.
        freeze_selector: keep the selector fixed (the LookWhere fine-tuning protocol).
        selector_gate: with a trainable selector, pass the classification loss to the selector map
            through a straight-through top-k gate.
        selector_lr_scale: learning-rate multiplier of a trainable selector.
        patch_loss_weight: full-res ViT only: weight of an auxiliary per-patch cross-entropy on the
            patch tokens (a linear ``patch_head``), each patch labelled from the batch's ``mask``
            (:meth:`patch_targets`; 0 = background). Dense supervision takes a from-scratch
            ViT past the plateau where a small object is one of hundreds of patches (the demo's
            teacher, see docs/design.md). Training only; batches must carry ``mask``.

    ``model.pretrained`` (a local file) is loaded at construction: official LookWhere layout for
    LookWhere; for the full-res ViT and the TokenLearner-ViT a timm state dict, a full-res ViT
    ``.ckpt`` of this project, or a file timm converts for ``model.pretrained_name``. TokenLearner
    itself is always trained from scratch.

    Evaluation samples the DataModule could not decode (``valid=False``) are excluded from every
    metric and counted in ``{stage}/corrupt_images``; ``predict`` gives them ``pred=-1``. Annotated
    images without a file are counted in ``{stage}/missing_images`` (``modules/valid.py``).
    """

    def __init__(
        self,
        model: ModelConfig | dict,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: int | float = 0.1,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        train_k: int | float | None = None,
        eval_k: int | float | None = None,
        eval_ks: list[int | float] | None = None,
        freeze_selector: bool = True,
        selector_gate: bool = False,
        selector_lr_scale: float = 1.0,
        patch_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = model_config(**model) if isinstance(model, dict) else model
        self.model_cfg = resolved_model_config(self.model_cfg, self.hparams)
        self.net = build_model(self.model_cfg)
        if isinstance(self.net, LookWhere):  # k is ignored by the full-res ViT
            n = self.model_cfg.grid[0] * self.model_cfg.grid[1]
            for name, k in (("module.model.k", self.model_cfg.k), ("module.train_k", train_k), ("module.eval_k", eval_k)):
                check_k(k, n, name)
            for i, k in enumerate(eval_ks or []):
                check_k(k, n, f"module.eval_ks[{i}]")
        if self.model_cfg.pretrained:
            load_pretrained(self.net, self.model_cfg.pretrained, name=self.model_cfg.pretrained_name)
        self.head = nn.Linear(self.model_cfg.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        if patch_loss_weight < 0:
            raise ValueError(f"module.patch_loss_weight must be >= 0, got {patch_loss_weight}")
        self.patch_head: nn.Linear | None = None
        if patch_loss_weight > 0:
            if self.model_cfg.arch != "vit":
                raise ValueError("module.patch_loss_weight needs module.model.arch=vit (every patch token is supervised)")
            self.patch_head = nn.Linear(self.model_cfg.embed_dim, num_classes)
            nn.init.trunc_normal_(self.patch_head.weight, std=0.02)
            nn.init.zeros_(self.patch_head.bias)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"module.class_weights has {len(class_weights)} entries for {num_classes} classes")
        self.register_buffer(
            "class_weights", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None, persistent=False
        )
        if freeze_selector and isinstance(self.net, LookWhere):
            self.net.selector.requires_grad_(False)
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_corrupt, self.test_corrupt = SumMetric(), SumMetric()
        ks = list(eval_ks or []) if self.is_lookwhere else []
        self.eval_ks = ks
        # one metric object per (stage, k): keys must be strings without dots
        self.k_metrics = nn.ModuleDict(
            {
                f"{stage}_{i}": MulticlassAccuracy(num_classes, top_k=1, average="micro")
                for stage in ("val", "test")
                for i in range(len(ks))
            }
        )

    @property
    def is_lookwhere(self) -> bool:
        return isinstance(self.net, LookWhere)

    def forward(self, images: Tensor, k: int | float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits (B, C) and the backbone's feature dict."""
        if self.is_lookwhere and self.hparams.freeze_selector:
            self.net.selector.eval()  # frozen: no dropout / drop-path noise either
        gate = self.is_lookwhere and self.training and self.hparams.selector_gate and not self.hparams.freeze_selector
        out = self.net(images, k=k, gate=gate) if self.is_lookwhere else self.net(images)
        return self.head(out["cls"]), out

    def model_step(self, batch: dict[str, Tensor], k: int | float | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        logits, out = self(batch["image"], k=k)
        target = batch.get("target", batch["label"])  # soft targets (mixup) when the data gives them
        loss = F.cross_entropy(logits.float(), target, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing)
        return loss, logits, out

    def patch_targets(self, mask: Tensor) -> Tensor:
        """(B,H,W) class mask -> (B, N) target per patch, row-major like the tokens: the patch's
        object class when objects cover more than half of it, else 0 (background). The object class
        is the largest class id in the patch: exact when a patch holds one object class, as in the
        synthetic signs (one sign per image)."""
        p = self.model_cfg.patch_size
        b, h, w = mask.shape
        # uint8 and integer reductions: a one-hot over full-res pixels costs ~10x more per step
        m = mask.to(torch.uint8).reshape(b, h // p, p, w // p, p)
        covered = (m > 0).sum((2, 4), dtype=torch.int32) * 2 > p * p
        return torch.where(covered, m.amax((2, 4)), 0).long().flatten(1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, logits, out = self.model_step(batch, self.hparams.train_k)
        if self.patch_head is not None:
            if "mask" not in batch:
                # a config mistake found at the first batch: the CLI prints it as one line
                raise ConfigError("module.patch_loss_weight > 0 needs batches with a 'mask' (synthetic signs: data.masks=true)")
            patch_logits = self.patch_head(out["tokens"]).float()
            patch_loss = F.cross_entropy(patch_logits.flatten(0, 1), self.patch_targets(batch["mask"]).flatten())
            self.log("train/patch_loss", patch_loss, on_step=True, on_epoch=False)
            loss = loss + self.hparams.patch_loss_weight * patch_loss
        self.train_loss(loss)
        self.train_metrics(logits, batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        if "valid" in batch:  # file-backed data: count and drop the unreadable samples
            corrupt = self.val_corrupt if stage == "val" else self.test_corrupt
            batch, dropped = keep_valid(batch)
            corrupt(dropped)
            self.log(f"{stage}/corrupt_images", corrupt, on_step=False, on_epoch=True, batch_size=1)
            if batch["label"].numel() == 0:
                return
        loss, logits, out = self.model_step(batch, self.hparams.eval_k)
        if self.eval_ks:
            # reuse the selector's output: only the extractor runs again for each extra k
            images = batch["image"]
            sel = {"map": out["selector_map"], "prefix": out["selector_prefix"]}
            grid = self.net.grid(images)
            for i, k in enumerate(self.eval_ks):
                extra = self.net.extract(images, sel, grid, k=k)
                self.k_metrics[f"{stage}_{i}"].update(self.head(extra["cls"]), batch["label"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        mean_loss = self.val_loss if stage == "val" else self.test_loss
        # cross_entropy averages with the class weights of the targets as sample weights: weighting
        # each batch mean by the same total makes the epoch loss exact, whatever the batching/sharding
        labels = batch["label"]
        mean_loss(loss, weight=self.class_weights[labels].sum() if self.class_weights is not None else labels.shape[0])
        metrics(logits, batch["label"])
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage == "val")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def _log_k_curve(self, stage: str) -> None:
        if not self.eval_ks:
            return
        accs = []
        for i, k in enumerate(self.eval_ks):
            metric = self.k_metrics[f"{stage}_{i}"]
            acc = metric.compute()  # syncs across ranks: called on every rank
            metric.reset()
            accs.append(float(acc))
            self.log(f"{stage}/acc1_k/{k}", acc)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._plot_k_curve(stage, accs)

    def _plot_k_curve(self, stage: str, accs: list[float]) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_figure"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([str(k) for k in self.eval_ks], accs, marker="o")
        ax.set_xlabel("k (patches kept)")
        ax.set_ylabel("top-1 accuracy")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        experiment.add_figure(f"{stage}/acc_vs_k", fig, global_step=self.global_step)
        plt.close(fig)

    def on_validation_epoch_end(self) -> None:
        log_missing(self, "val", "images")
        self._log_k_curve("val")

    def on_test_epoch_end(self) -> None:
        log_missing(self, "test", "images")
        self._log_k_curve("test")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits, out = self(batch["image"], k=self.hparams.eval_k)
        probs = logits.float().softmax(-1)
        score, pred = probs.max(-1)
        if "valid" in batch:  # an unreadable file gets no prediction (its input was a placeholder)
            valid = batch["valid"]
            pred, score = torch.where(valid, pred, torch.full_like(pred, -1)), score * valid
        result = {"index": batch["index"], "pred": pred, "score": score}
        if "label" in batch:
            result["label"] = batch["label"]
        if "selected" in out:
            result["selected"] = out["selected"]
        if "maps" in out:  # TokenLearner: the patch each learned token attends to most
            result["token_peaks"] = out["maps"].argmax(dim=-1)
        return result

    def configure_optimizers(self):
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        # a trainable selector may learn slower than the rest (its distilled map is easy to wreck)
        scales = {"net.selector.": hp.selector_lr_scale} if hp.selector_lr_scale != 1.0 else None
        return adamw_warmup_cosine(self.named_parameters(), hp.lr, hp.weight_decay, total, hp.warmup, hp.min_lr_ratio, scales)

    # -- hooks read by the callbacks (lw_lightning.callbacks.perf / .images) --------------------
    def flops_per_sample(self) -> int:
        """FLOPs of one evaluation forward pass on one image of the configured size, at ``eval_k``."""
        return count_flops(self, torch.zeros(1, 3, *self.model_cfg.img_size, device=self.device), k=self.hparams.eval_k)

    def example_images(self, batch: dict[str, Tensor], ncols: int = 4) -> dict[str, Image.Image]:
        """Tag -> picture of where the model looks on ``batch`` (selections at ``eval_k``, token maps)."""
        images = batch["image"].to(self.device)
        return image_model_pictures(self.net, images, k=self.hparams.eval_k, boxes=batch.get("box"), ncols=ncols)
