"""Callbacks used by the scaling tests through ``callbacks.<name>._target_=tests.scale_helpers.X``
(they also work in subprocesses launched from the repository root)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


class KillAtStep(pl.Callback):
    """SIGKILLs its own process after optimizer step ``step``: no cleanup, no checkpoint, no
    exception handler runs (a crash or a pre-empted node, not a request to stop)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NaNAtSteps(pl.Callback):
    """Fills the images of the batches at the given global steps with NaN (a poisoned batch)."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step in self.steps:
            batch["image"].fill_(float("nan"))


class RankProbe(pl.Callback):
    """Writes ``rank_<global rank>.json`` into ``folder``: world size, the sample indices this rank
    trained on, per-device batch sizes, LookWhere's k per step as seen on this rank and as
    gathered from all ranks."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.record: dict[str, Any] = {"indices": [], "batch_sizes": [], "k": [], "k_all_ranks": []}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.record["indices"].extend(int(i) for i in batch["index"])
        self.record["batch_sizes"].append(int(batch["index"].shape[0]))
        k = getattr(pl_module, "last_k", None)
        if k is not None:
            self.record["k"].append(int(k))
            gathered = pl_module.all_gather(torch.tensor(int(k), device=pl_module.device))
            self.record["k_all_ranks"].append([int(v) for v in gathered.reshape(-1)])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        info = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "world_size": trainer.world_size,
            "env_rank": os.environ.get("RANK"),
            **self.record,
        }
        (folder / f"rank_{trainer.global_rank}.json").write_text(json.dumps(info))


class StepMarker(pl.Callback):
    """Writes the global step into the file ``path`` after every training batch (atomically), then
    sleeps ``delay`` seconds: a test can wait until training runs and signal it mid-epoch."""

    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.path = Path(path)
        self.delay = delay

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(trainer.global_step))
        tmp.replace(self.path)
        time.sleep(self.delay)


class SlowStep(pl.Callback):
    """Makes the training step after optimizer step ``step`` last ``seconds``: it writes ``path``
    and sleeps between backward and the optimizer step (a step that outlasts a grace time)."""

    def __init__(self, path: str, step: int, seconds: float) -> None:
        self.path = Path(path)
        self.step = step
        self.seconds = seconds

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.global_step == self.step:
            self.path.write_text(str(trainer.global_step))
            time.sleep(self.seconds)
