"""The ImageNet-1k LightningDataModule (DeiT-style augmentation, optional Mixup/CutMix and
repeated augmentation)."""

from __future__ import annotations

from typing import Any

from timm.data import Mixup
from torch.utils.data import Dataset

from ...errors import ConfigError
from ..base import BaseDataModule
from ..images import report_skipped
from ..missing import warn_missing
from ..transforms import imagenet_eval_transform, imagenet_train_transform
from .dataset import ImageNetDataset
from .labels import (
    NUM_CLASSES,
    canonical_wnids,
    default_class_names,
    read_synset_mapping,
)
from .layout import ImageNetLayout, find_layout, list_samples


class ImageNetDataModule(BaseDataModule):
    """ImageNet-1k classification (1000 classes), DeiT-style augmentation.

    Args:
        root: dataset root in one of the layouts of :mod:`lw_lightning.data.imagenet`.
        image_size: train crop / eval size: side or [H, W].
        crop_pct: eval resize = size / crop_pct, then center crop.
        auto_augment: timm RandAugment string; null disables it.
        re_prob: RandomErasing probability.
        mixup / cutmix: Beta alphas; either > 0 turns on timm Mixup on training batches (adds a
            soft ``target`` (B, 1000); the per-device batch must be even).
        label_smoothing: folded into the Mixup soft targets.
        repeated_aug: repeated augmentation (DeiT's RASampler uses 3): each image of the epoch's
            order is drawn this many times in a row, on different ranks, with its own augmentation;
            an epoch keeps its length and so sees 1/repeated_aug of the images. 1: off.
        max_retries: unreadable training images replaced in a row before giving up.
    """

    def __init__(
        self,
        root: str = "data/imagenet",
        image_size: int | list[int] = 224,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        scale: list[float] | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        repeated_aug: int = 1,
        max_retries: int = 10,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        self.root = root
        self.image_size = image_size
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.auto_augment = auto_augment
        self.re_prob = re_prob
        self.scale = tuple(scale) if scale is not None else (0.08, 1.0)
        self.max_retries = max_retries
        if repeated_aug < 1:
            raise ConfigError(f"data.repeated_aug must be >= 1, got {repeated_aug}")
        self.repeated_aug = repeated_aug
        self.mixup_fn: Mixup | None = None
        if mixup > 0 or cutmix > 0:
            self.mixup_fn = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, switch_prob=mixup_switch_prob,
                mode="batch", label_smoothing=label_smoothing, num_classes=NUM_CLASSES,
            )
        self.wnids = canonical_wnids()
        self.num_classes = NUM_CLASSES
        self.class_names = default_class_names()
        self._layout: ImageNetLayout | None = None

    def layout(self) -> ImageNetLayout:
        if self._layout is None:
            self._layout = find_layout(self.root)
            if self._layout.synset_mapping is not None:
                wnids, names = read_synset_mapping(self._layout.synset_mapping)
                if wnids != self.wnids:
                    raise ConfigError(f"{self._layout.synset_mapping}: does not list the 1000 ImageNet-1k wnids in sorted order")
                self.class_names = names
        return self._layout

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.mixup_fn is not None and self.batch_size_per_device % 2:
            raise ConfigError(f"mixup/cutmix need an even per-device batch; got {self.batch_size_per_device}")

    def build_dataset(self, split: str) -> Dataset:
        wnid_to_index = {w: i for i, w in enumerate(self.wnids)}
        layout = self.layout()
        samples, missing = list_samples(layout, "train" if split == "train" else "val", wnid_to_index)
        if missing:  # a flat val whose label file lists images this copy lacks
            labels = layout.val_solution or layout.devkit[0]  # type: ignore[index]
            warn_missing(str(labels), split, missing, len(samples) + len(missing), "images")
        if split == "train":
            transform = imagenet_train_transform(
                self.image_size, self.auto_augment, self.re_prob, self.scale, interpolation=self.interpolation
            )
        else:
            transform = imagenet_eval_transform(self.image_size, self.crop_pct, self.interpolation)
        return ImageNetDataset(
            samples, transform, train=split == "train", seed=self.seed, max_retries=self.max_retries, root=layout.root,
            missing=len(missing),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Mixup acts on whole training batches, on the device; evaluation is never mixed
        trainer = self.trainer
        if self.mixup_fn is not None and trainer is not None and trainer.training:
            batch["image"], batch["target"] = self.mixup_fn(batch["image"], batch["label"])
        return batch

    def teardown(self, stage: str | None = None) -> None:
        report_skipped(self.datasets.values())
