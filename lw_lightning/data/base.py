"""Common LightningDataModule plumbing: global -> per-device batch size, loaders, samplers.

Batches are dicts of tensors (``image``, ``label``, ``index``, plus task extras such as ``box``
or ``mask``) so modules and callbacks read fields by name.

Evaluation under DDP: Lightning's default ``DistributedSampler`` pads the last shard by repeating
samples, which biases reported metrics. Evaluation loaders here shard without padding with
Lightning's own ``UnrepeatedDistributedSampler``. Training loaders are
:class:`~lw_lightning.data.resumable.ResumableDataLoader`: a seeded per-epoch order sharded like
``DistributedSampler`` (also on one device), whose position inside the epoch is saved in
checkpoints for exact mid-epoch resume. Both samplers are ``DistributedSampler`` subclasses, which
is what tells Lightning (``trainer.use_distributed_sampler``, left at its default ``true``) that
these loaders are sharded already: it keeps them as they are, and still shards the loaders of
any other DataModule.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from .palette import indexed_palette
from .resumable import EpochShardSampler, ResumableDataLoader
from .workers import loader_worker_init


class BaseDataModule(pl.LightningDataModule):
    """Subclasses implement :meth:`build_dataset` and set ``num_classes`` / ``class_names``."""

    num_classes: int
    class_names: list[str]
    #: segmentation: what the dataset's label files store for class c is c + label_offset (ADE20K:
    #: 1, its 0 is "other"); predicted masks are written in that convention
    label_offset: int = 0

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"data.{name} must be a positive number of samples, got {value!r}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be 0 (load in the main process) or more, got {num_workers}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}
        self.batch_size_per_device = batch_size
        self.eval_batch_size_per_device = self.eval_batch_size
        self._train_loader: ResumableDataLoader | None = None
        self._train_state: dict[str, Any] | None = None  # from a checkpoint, for the next train loader
        #: repeated augmentation of the training order (1: off); DataModules that offer it set it
        self.repeated_aug = 1

    # -- to implement -------------------------------------------------------------------------
    def build_dataset(self, split: str) -> Dataset:
        """Return the dataset of ``split`` in {"train", "val", "test", "predict"}."""
        raise NotImplementedError

    collate_fn: Callable[[list[Any]], Any] | None = None

    def label_palette(self) -> np.ndarray:
        """(n, 3) uint8 colours of the stored label values 0..n-1 (predicted mask PNGs): one per
        class, PASCAL VOC's table unless the dataset has its own."""
        return indexed_palette(self.num_classes + self.label_offset)

    # -- Lightning hooks ------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def setup(self, stage: str | None = None) -> None:
        world, _ = self._world()
        for name, total in (("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size)):
            if total % world:
                raise ConfigError(f"data.{name}={total} (global) is not divisible by the {world} devices")
        self.batch_size_per_device = self.batch_size // world
        self.eval_batch_size_per_device = self.eval_batch_size // world
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in splits.get(stage or "fit", ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.datasets[split]
        world, rank = self._world()
        common = dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self.collate_fn,
            worker_init_fn=functools.partial(loader_worker_init, rank=rank) if self.num_workers > 0 else None,
        )
        if train:
            # order = f(seed, epoch), position saved in checkpoints: exact mid-epoch resume
            sampler = EpochShardSampler(len(ds), world, rank, seed=self.seed, repeats=self.repeated_aug)  # type: ignore[arg-type]
            loader = ResumableDataLoader(ds, batch_size=self.batch_size_per_device, sampler=sampler, drop_last=True, seed=self.seed, **common)
            if self._train_state is not None:
                loader.load_state_dict(self._train_state)
                self._train_state = None
            self._train_loader = loader
            return loader
        eval_sampler = None
        if world > 1:
            if len(ds) < world:  # type: ignore[arg-type]
                raise ConfigError(f"the {split} split has {len(ds)} samples, fewer than the {world} devices")  # type: ignore[arg-type]
            # contiguous strided shards, no padding: every sample is evaluated exactly once
            eval_sampler = UnrepeatedDistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
        # an own generator: creating the iterator then draws no number from the global RNG
        return DataLoader(
            ds, batch_size=self.eval_batch_size_per_device, shuffle=False, sampler=eval_sampler, drop_last=False,
            generator=torch.Generator().manual_seed(self.seed), **common,
        )

    # The loader position also travels through the DataModule's checkpoint state: Lightning restores
    # DataModules before it first builds the training loader, whereas its own loader-state restore
    # is skipped when configure_optimizers has already built the loader (estimated_stepping_batches).
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_state = state_dict.get("train_loader")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch on one device (for schedules built before the loader)."""
        world, _ = self._world()
        n = len(self.datasets["train"]) // world
        return max(1, math.floor(n / self.batch_size_per_device))
