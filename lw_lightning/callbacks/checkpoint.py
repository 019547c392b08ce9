"""``ModelCheckpoint`` whose ``last.ckpt`` is one shared, never-versioned file that always holds
the newest state."""

from __future__ import annotations

import weakref

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from ..errors import ConfigError

# trainer -> {last.ckpt path: global step it was last written at}, shared by every instance, so
# two callbacks do not both write the same final state
_LAST_WRITTEN: weakref.WeakKeyDictionary[pl.Trainer, dict[str, int]] = weakref.WeakKeyDictionary()


# Same class name as Lightning's: a callback's state key in a checkpoint is built from its class
# name, so checkpoints written with the plain Lightning callback still resume with this one.
class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with a ``last.ckpt`` that is always the newest state.

    Lightning's callback (2.6) has two habits that made ``last.ckpt`` stale:

    * it writes ``last-v1.ckpt`` when it finds a ``last.ckpt`` it did not write itself, so two
      callbacks (best-per-epoch and every-N-steps) kept two "last" files, each refreshed by one
      callback only;
    * it refreshes ``last`` only when it also saved a top-k checkpoint at that step, so an epoch
      that was not the best, and the end of training, left ``last`` behind.

    Here every instance overwrites the same ``last.ckpt`` (no version counter, no file-existence
    check: every DDP rank takes the same path without a collective) at each of its triggers
    (every N steps, every epoch end, whether or not the epoch was the best) and at the end of
    training, unless that global step is already in ``last.ckpt``.

    ``save_last="link"`` is not supported (a symlink would point at one callback's file).
    """

    # no __init__ of its own: config validation checks keys against Lightning's signature

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.save_last == "link":
            raise ConfigError(
                "callbacks: save_last='link' is not supported by lw_lightning's ModelCheckpoint; use save_last=true"
            )
        super().setup(trainer, pl_module, stage)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        # set before saving: last_model_path is part of the saved callback state
        previous, self.last_model_path = self.last_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        _LAST_WRITTEN.setdefault(trainer, {})[filepath] = trainer.global_step
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this global step."""
        if not self.save_last or trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if _LAST_WRITTEN.get(trainer, {}).get(filepath) != trainer.global_step:
            self._save_last_checkpoint(trainer, candidates)

    def _epoch_triggered(self, trainer: pl.Trainer) -> bool:
        return self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and self._epoch_triggered(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and self._epoch_triggered(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)
