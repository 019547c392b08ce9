"""Non-finite training loss: stop with a message naming the step, or skip the batch with a counter."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """Raised on every rank when a training loss is NaN or infinite (``action="stop"``)."""


class NonFiniteLoss(pl.Callback):
    """Watches the training loss before each backward pass.

    * ``action="stop"``: raise :class:`NonFiniteLossError` naming the global step, epoch and batch
      before the backward pass, so the weights (and any checkpoint written afterwards) stay finite;
      the CLI reports it as one line and exits with status 3.
    * ``action="skip"``: let the backward run (DDP needs every rank to take part), then drop all
      gradients so the optimizer leaves weights and moments untouched; the step still counts for the
      LR schedule. Skips are counted (``train/nonfinite_skipped``, kept across resume) and the run
      stops once more than ``max_skips`` batches were skipped.

    Under DDP the decision is made from all ranks' losses (one scalar all-reduce per step), so all
    ranks stop or skip together.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_skips: int = 100) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.nonfinite.action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0
        self._skip_this_step = False

    def _where(self, trainer: pl.Trainer) -> str:
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        return f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch})"

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0, device=loss.device)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        if float(bad) == 0.0:
            return  # (a skip flagged by an earlier accumulated micro-batch stays flagged)
        value = loss.detach().float().item()
        if self.action == "stop":
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at {self._where(trainer)}; "
                "lower the learning rate, check the data, or set callbacks.nonfinite.action=skip"
            )
        self.skipped += 1
        self._skip_this_step = True
        rank_zero_warn(f"skipping batch with non-finite loss ({value}) at {self._where(trainer)}: {self.skipped} skipped so far")
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(
                f"more than {self.max_skips} batches with a non-finite loss (latest at {self._where(trainer)})"
            )

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self._skip_this_step:
            # no gradient: AdamW/SGD leave such parameters (and their moments) unchanged
            optimizer.zero_grad(set_to_none=True)
            self._skip_this_step = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.action == "skip":
            pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
