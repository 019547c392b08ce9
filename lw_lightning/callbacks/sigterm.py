"""Stop a ``fit`` on SIGTERM at the next batch boundary, with a resumable ``last.ckpt``.

Lightning's signal connector already installs a SIGTERM handler for every run: it only sets
``trainer.received_sigterm``, and the loops raise :class:`SIGTERMException` (a ``SystemExit``
with status 0) after the current training batch, or after the current validation batch. On its
own that ends a run silently, with status 0 and without a checkpoint of the batches trained
since the last save. :class:`SigtermCheckpoint` builds on that flag:

- at ``on_train_batch_end`` of the batch during which the signal came it writes ``last.ckpt``,
  the same point (and the same loop state) as the step checkpoints of ``ModelCheckpoint``, so
  ``ckpt_path=last`` resumes exactly where the run stopped;
- when the signal came during validation or the sanity check, and under DDP (where Lightning
  broadcasts rank 0's flag at the start of the next batch and every rank raises there), it
  writes ``last.ckpt`` from ``on_exception`` instead (as Lightning's ``OnExceptionCheckpoint``
  does), provided a training batch ended in this process (otherwise there is nothing new to
  save). The DDP path is not covered by a test.

:func:`lw_lightning.tasks.run` turns the exception into :class:`StoppedBySignal`, which the CLI
prints as one line and exit status 143 (128 + SIGTERM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

#: exit status of a run stopped by SIGTERM (the shell's 128 + signal number convention)
SIGTERM_EXIT_STATUS = 143


class StoppedBySignal(Exception):
    """A fit stopped by SIGTERM; ``str()`` is the one-line report, ``checkpoint`` what was saved."""

    def __init__(self, message: str, checkpoint: str | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class SigtermCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` once when Lightning has received SIGTERM (see the module docstring)."""

    def __init__(self) -> None:
        self.saved_path: str | None = None
        self.saved_step: int | None = None
        self._trained = False  # a training batch ended in this process: there is state to save

    def last_path(self, trainer: pl.Trainer) -> Path:
        """Where ``ckpt_path=last`` looks: the ``save_last`` ModelCheckpoint's folder, or
        ``<log dir or default_root_dir>/checkpoints/`` when no callback keeps a last.ckpt."""
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
                return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        root = trainer.log_dir if trainer.loggers and trainer.log_dir else trainer.default_root_dir
        return Path(root) / "checkpoints" / "last.ckpt"

    def _save(self, trainer: pl.Trainer) -> None:
        if self.saved_path is not None or not self._trained:
            return
        path = self.last_path(trainer)
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last:
                # a later last-save of theirs then overwrites this file instead of writing last-v1.ckpt
                cb.last_model_path = str(path)
        # the full training state (optimizer, loops: Lightning's "not weights only") for an exact resume;
        # every rank calls it (the flag is broadcast), rank 0 writes
        trainer.save_checkpoint(path, False)
        self.saved_path, self.saved_step = str(path), trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._trained = True
        # under DDP only the ranks that saw the flag would get here with it set, and saving is a
        # collective (barrier): wait for Lightning's broadcast, which makes every rank raise together
        if trainer.received_sigterm and trainer.world_size == 1:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self._save(trainer)

    def report(self, trainer: pl.Trainer) -> StoppedBySignal:
        """The exception :func:`lw_lightning.tasks.run` raises after the SIGTERMException."""
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch})"
        if self.saved_path is None:
            return StoppedBySignal(f"fit stopped by SIGTERM at {where} before a training step ended; no checkpoint written", None)
        return StoppedBySignal(
            f"fit stopped by SIGTERM at {where}: saved {self.saved_path}; resume with ckpt_path=last", self.saved_path
        )
