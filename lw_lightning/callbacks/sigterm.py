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

A step can outlast a scheduler's grace time (a ViT-B step on a CPU takes minutes), and the flag is
read only after it. So the callback puts its own handler in front of Lightning's: the first
SIGTERM also prints one line saying that the run waits for the current step to end and that a
second SIGTERM stops at once; a second SIGTERM ends the process at once (``os._exit``, status 143)
without saving, so ``last.ckpt`` stays the one written before.

:func:`lw_lightning.tasks.run` turns the exception into :class:`StoppedBySignal`, which the CLI
prints as one line and exit status 143 (128 + SIGTERM).
"""

from __future__ import annotations

import os
import signal
import threading
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
        self._signals = 0  # SIGTERMs received by this process
        self._lightning_handler: Any = None  # the handler ours wraps, once installed
        self._trainer: pl.Trainer | None = None
        self._last_file: Path | None = None  # where ckpt_path=last looks (set with the handler)

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

    def _install(self, trainer: pl.Trainer) -> None:
        """Put :meth:`_on_sigterm` in front of Lightning's SIGTERM handler (registered just before
        the sanity check and the training loop start); once, from the main thread only."""
        if self._lightning_handler is not None or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if not callable(current):
            return  # Lightning installed none: nothing to wrap
        self._lightning_handler, self._trainer = current, trainer
        # found now, on every rank: a signal handler must not ask trainer.log_dir (a collective under DDP)
        self._last_file = self.last_path(trainer)
        # Lightning's teardown puts back the handlers it found, which removes this one too
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        assert trainer is not None
        self._signals += 1
        if self._signals == 1:
            self._lightning_handler(signum, frame)  # sets the flag the loops read after the current step
            _say(
                trainer,
                "fit got SIGTERM: waiting for the current step to end, then saving last.ckpt and stopping "
                "(a second SIGTERM stops at once, without saving)",
            )
            return
        if trainer.is_global_zero:
            _say(trainer, self._stopped_at_once(trainer))
        launcher = trainer.strategy.launcher
        if launcher is not None:  # DDP processes this one started: they stop at once too
            launcher.kill(signum)
        # at once: no exception, no teardown, no save (the step in progress is abandoned)
        os._exit(SIGTERM_EXIT_STATUS)

    def _stopped_at_once(self, trainer: pl.Trainer) -> str:
        """The line of a second SIGTERM: what ``ckpt_path=last`` will find."""
        head = f"fit stopped at once by a second SIGTERM at global step {trainer.global_step}"
        if self.saved_path is not None:
            return f"{head}: {self.saved_path} (global step {self.saved_step}) was saved before; resume with ckpt_path=last"
        last = self._last_file
        if last is not None and last.is_file():
            return f"{head}, without saving: {last} is kept as it was; resume with ckpt_path=last"
        return f"{head}, without saving (no last.ckpt was written yet)"

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


def _say(trainer: pl.Trainer, line: str) -> None:
    """One line on stderr from rank 0, from a signal handler: ``os.write`` (not ``print``, whose
    buffered stream may be in use by the code the signal interrupted)."""
    if trainer.is_global_zero:
        os.write(2, (line + "\n").encode())
