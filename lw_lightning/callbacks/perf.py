"""Cost scalars for TensorBoard: training / evaluation samples per second and FLOPs per sample."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor


def batch_size_of(batch: Any) -> int:
    """Samples in a batch dict (``image`` / ``video`` / the first tensor)."""
    if isinstance(batch, dict):
        for key in ("image", "video", "label"):
            if isinstance(batch.get(key), Tensor):
                return int(batch[key].shape[0])
        for value in batch.values():
            if isinstance(value, Tensor) and value.ndim > 0:
                return int(value.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return int(batch[0].shape[0])
    return 0


class Throughput(pl.Callback):
    """Logs ``perf/train_samples_per_sec`` (all devices together, data loading included) averaged
    over the last ``window`` steps, and ``perf/{val,test}_samples_per_sec`` per evaluation pass."""

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError("callbacks.throughput.window must be >= 1")
        self.window = window
        self._t0: float | None = None
        self._samples = 0
        self._steps = 0
        self._eval_t0 = 0.0
        self._eval_samples = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._samples, self._steps = None, 0, 0  # the time spent in validation is not training

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # training shards are equal on every rank (drop_last): global samples = local × world size
        self._samples += batch_size_of(batch) * trainer.world_size
        self._steps += 1
        if self._steps >= self.window and self._t0 is not None:
            elapsed = time.perf_counter() - self._t0
            pl_module.log("perf/train_samples_per_sec", self._samples / max(elapsed, 1e-9), on_step=True, on_epoch=False)
            self._t0, self._samples, self._steps = time.perf_counter(), 0, 0

    def _eval_start(self) -> None:
        self._eval_t0, self._eval_samples = time.perf_counter(), 0

    def _eval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - self._eval_t0
        # evaluation shards may differ in size: each rank's rate, summed over ranks
        rate = torch.tensor(self._eval_samples / max(elapsed, 1e-9), device=pl_module.device)
        pl_module.log(f"perf/{stage}_samples_per_sec", rate, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="sum")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start()

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_samples += batch_size_of(batch)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_samples += batch_size_of(batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module, "test")


class FlopsPerSample(pl.Callback):
    """Logs ``perf/gflops_per_sample`` once per run (step 0), on global rank 0.

    The count comes from the LightningModule's ``flops_per_sample()`` hook (one evaluation forward
    pass on one sample of its configured input size, counted with ``torch.utils.flop_counter``;
    multiply-adds count as 2 FLOPs, the papers' "FLOPs" are half of this), in the manner of
    Lightning's ``ThroughputMonitor``, which reads a module's ``flops_per_batch``. A module
    without the hook, or whose hook returns None, logs nothing.
    """

    def __init__(self) -> None:
        self.flops: int | None = None

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.flops is not None or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            hook = getattr(pl_module, "flops_per_sample", None)
            self.flops = hook() if callable(hook) else None
        finally:
            pl_module.train(was_training)
        if self.flops is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"perf/gflops_per_sample": self.flops / 1e9}, step=0)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":  # during fit, on_fit_start already counted
            self._log(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)
