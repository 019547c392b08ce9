"""Write the resolved run config next to the logs, on global rank 0 only."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class SaveConfig(pl.Callback):
    """Saves ``config.yaml`` (``config_<command>.yaml`` for evaluation commands) in the run dir.

    ``trainer.log_dir`` is read on every rank (it broadcasts under DDP); only global rank 0 writes.
    An existing file is never overwritten: a numbered name is used instead.
    """

    def __init__(self, yaml_text: str, command: str = "fit") -> None:
        self.yaml_text = yaml_text
        self.command = command
        self.path: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.fast_dev_run or not trainer.loggers:
            return
        log_dir = trainer.log_dir
        if log_dir is None or not trainer.is_global_zero:
            return
        stem = "config" if self.command == "fit" else f"config_{self.command}"
        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.yaml"
        n = 1
        while path.exists():
            path = folder / f"{stem}_{n}.yaml"
            n += 1
        path.write_text(self.yaml_text)
        self.path = path
