"""Run a resolved config: build data, module, callbacks, logger and trainer, then call the command."""

from __future__ import annotations

import inspect
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from .callbacks.predictions import PredictionWriter
from .callbacks.save_config import SaveConfig
from .config import ConfigError, instantiate, locate, to_yaml

log = logging.getLogger(__name__)

COMMANDS = ("fit", "validate", "test", "predict")


@dataclass
class RunResult:
    """What a command produced: final metrics and the objects built for it."""

    metrics: dict[str, float]
    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    log_dir: str | None
    extras: dict[str, Any] = field(default_factory=dict)


def _links(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Module arguments known only once the DataModule exists (e.g. ``num_classes``)."""
    target = locate(str(cfg.module["_target_"]))
    params = inspect.signature(target.__init__).parameters
    links: dict[str, Any] = {}
    for name in ("num_classes", "class_weights"):
        if name in params and cfg.module.get(name) is None and getattr(datamodule, name, None) is not None:
            value = getattr(datamodule, name)
            links[name] = [float(v) for v in value] if name == "class_weights" else value
    return links


def build(cfg: DictConfig, command: str) -> tuple[pl.Trainer, pl.LightningModule, pl.LightningDataModule]:
    """Instantiate everything a command needs. Mistakes in arguments surface as ConfigError."""
    try:
        datamodule = instantiate(cfg.data)
        module = instantiate(cfg.module, **_links(cfg, datamodule))
        callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
        logger = instantiate(cfg.logger) if cfg.get("logger") else False
    except (TypeError, ValueError, FileNotFoundError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"invalid configuration: {err}") from err
    if cfg.trainer.get("enable_progress_bar") is False:
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    callbacks.append(SaveConfig(to_yaml(cfg), command))
    if command == "predict":
        callbacks.append(PredictionWriter(class_names=getattr(datamodule, "class_names", None)))
    if command != "fit":
        # evaluation must not write checkpoints
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ModelCheckpoint)]
    trainer_kw: dict[str, Any] = {}
    if cfg.trainer.get("default_root_dir") is None and cfg.get("output_dir"):
        # fast_dev_run drops the logger: keep its checkpoints under output_dir, not the cwd
        trainer_kw["default_root_dir"] = str(cfg.output_dir)
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, **trainer_kw)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"invalid trainer configuration: {err}") from err
    return trainer, module, datamodule


def run(cfg: DictConfig, command: str) -> RunResult:
    """Seed, build, and run ``command`` (fit / validate / test / predict)."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown command '{command}'")
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    trainer, module, datamodule = build(cfg, command)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, "last", "best") and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path not found: {ckpt_path}")
    log_dir = _planned_log_dir(trainer)
    existed = log_dir is not None and Path(log_dir).exists()
    try:
        if command == "fit":
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        else:
            getattr(trainer, command)(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except ConfigError:
        # a user mistake found while setting up (e.g. a missing data root): leave nothing behind
        if log_dir is not None and not existed and trainer.is_global_zero:
            shutil.rmtree(log_dir, ignore_errors=True)
            parent = Path(log_dir).parent  # runs/<name>/ if this run created it
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    return RunResult(metrics, trainer, module, datamodule, log_dir)


def _planned_log_dir(trainer: pl.Trainer) -> str | None:
    if not trainer.loggers:
        return None
    try:
        return trainer.loggers[0].log_dir
    except Exception:  # loggers without a directory
        return None
