"""Run a resolved config: build data, module, callbacks, logger and trainer, then call the command."""

from __future__ import annotations

import inspect
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .callbacks.perf import FlopsPerSample
from .callbacks.predictions import PredictionWriter
from .callbacks.save_config import SaveConfig
from .callbacks.sigterm import SigtermCheckpoint, StoppedBySignal
from .config import ConfigError, instantiate, locate, to_yaml
from .runtime import warn_if_gpu_recipe_on_cpu, warn_if_low_precision_on_cpu

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
    if command == "fit":
        callbacks.append(SigtermCheckpoint())  # SIGTERM: last.ckpt at the batch boundary, then stop
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


def find_last_checkpoint(cfg: DictConfig) -> tuple[Path, str | None] | None:
    """The run's newest ``last.ckpt`` and the logger version directory holding it.

    Looks in ``<save_dir>/<name>/version_*/checkpoints/`` of the configured logger (highest version
    first), or in ``<default_root_dir or output_dir>/checkpoints/`` for runs without a logger.
    """
    logger = cfg.get("logger")
    if logger:
        base = Path(str(logger.get("save_dir", cfg.get("output_dir", ".")))) / str(logger.get("name", cfg.get("name", "")))
        versions = []
        for d in base.glob("version_*"):
            m = re.fullmatch(r"version_(\d+)", d.name)
            if m and (d / "checkpoints" / "last.ckpt").is_file():
                versions.append((int(m.group(1)), d))
        if versions:
            _, d = max(versions)
            return d / "checkpoints" / "last.ckpt", d.name
        return None
    root = Path(str(cfg.trainer.get("default_root_dir") or cfg.get("output_dir") or "."))
    path = root / "checkpoints" / "last.ckpt"
    return (path, None) if path.is_file() else None


def _resolve_ckpt_path(cfg: DictConfig, command: str) -> tuple[str | None, DictConfig]:
    """``ckpt_path=last``: the run's newest last.ckpt (see :func:`find_last_checkpoint`). A resumed
    ``fit`` keeps logging into the same version directory. Without a checkpoint ``fit`` starts
    from scratch (so one job script serves the first start and every requeue), other commands
    fail with a one-line error."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, "best"):
        return ckpt_path, cfg
    if ckpt_path != "last":
        if not Path(str(ckpt_path)).is_file():
            raise ConfigError(f"ckpt_path not found: {ckpt_path}")
        return str(ckpt_path), cfg
    found = find_last_checkpoint(cfg)
    if found is None:
        where = f"{cfg.logger.get('save_dir')}/{cfg.logger.get('name')}/version_*/checkpoints" if cfg.get("logger") else "checkpoints/"
        if command != "fit":
            raise ConfigError(f"ckpt_path=last: no last.ckpt found under {where}")
        log.warning("ckpt_path=last: no last.ckpt under %s yet, starting from scratch", where)
        return None, cfg
    path, version = found
    if command == "fit" and version is not None and cfg.get("logger"):
        params = inspect.signature(locate(str(cfg.logger["_target_"])).__init__).parameters
        if "version" in params and cfg.logger.get("version") is None:
            cfg = cfg.copy()
            OmegaConf.update(cfg, "logger.version", version, force_add=True)
    return str(path), cfg


def run(cfg: DictConfig, command: str) -> RunResult:
    """Seed, build, and run ``command`` (fit / validate / test / predict).

    A ``fit`` stopped by SIGTERM raises :class:`~lw_lightning.callbacks.sigterm.StoppedBySignal`
    after writing ``last.ckpt`` (see :mod:`lw_lightning.callbacks.sigterm`)."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown command '{command}'")
    ckpt_path, cfg = _resolve_ckpt_path(cfg, command)
    warn_if_gpu_recipe_on_cpu(cfg, command)  # before building: a ViT-B recipe takes a while to build
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    trainer, module, datamodule = build(cfg, command)
    warn_if_low_precision_on_cpu(trainer)
    log_dir = _planned_log_dir(trainer)
    existed = log_dir is not None and Path(log_dir).exists()
    started = time.time()
    try:
        if command == "fit":
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        else:
            getattr(trainer, command)(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        stopper = next((c for c in trainer.callbacks if isinstance(c, SigtermCheckpoint)), None)  # type: ignore[attr-defined]
        if stopper is None:  # validate / test / predict: nothing to save, but not a success either
            raise StoppedBySignal(f"{command} stopped by SIGTERM before it finished; no results", None) from None
        raise stopper.report(trainer) from None
    except ConfigError:
        # a user mistake found while setting up (e.g. a missing data root): leave nothing behind
        if log_dir is not None and not existed and trainer.is_global_zero:
            shutil.rmtree(log_dir, ignore_errors=True)
            parent = Path(log_dir).parent  # runs/<name>/ if this run created it
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, FlopsPerSample) and cb.flops is not None:
            metrics["perf/gflops_per_sample"] = cb.flops / 1e9
    result = RunResult(metrics, trainer, module, datamodule, log_dir)
    if trainer.is_global_zero and not trainer.fast_dev_run:
        _write_summary(cfg, command, result, ckpt_path, time.time() - started)
    return result


def _flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as flat ``a/b/c`` scalars for TensorBoard's hparams tab."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "_target_":
                    walk(v, f"{prefix}{k}/")
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix[:-1]] = node
        elif node is not None:
            flat[prefix[:-1]] = str(node)

    if isinstance(plain, dict):
        walk({k: plain[k] for k in ("name", "seed", "data", "module", "trainer") if k in plain}, "")
    return flat


def _write_summary(cfg: DictConfig, command: str, result: RunResult, ckpt_path: str | None, seconds: float) -> None:
    """Rank 0: ``summary_<command>.json`` in the run dir, and the hparams tab with final metrics."""
    trainer = result.trainer
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.TensorBoardLogger) and result.metrics:
            # "hp/" tags: final values as their own scalars, not a stray point on the curves
            logger.log_hyperparams(_flat_params(cfg), metrics={f"hp/{k}": v for k, v in result.metrics.items()})
            logger.save()
    if result.log_dir is None:
        return
    ckpt_cb = trainer.checkpoint_callback if command == "fit" else None
    summary = {
        "command": command,
        "metrics": result.metrics,
        "run_dir": result.log_dir,
        "ckpt_path": ckpt_path,
        "best_model_path": getattr(ckpt_cb, "best_model_path", None) or None,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
        "seconds": round(seconds, 3),
    }
    folder = Path(result.log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"summary_{command}.json").write_text(json.dumps(summary, indent=2) + "\n")


def _planned_log_dir(trainer: pl.Trainer) -> str | None:
    if not trainer.loggers:
        return None
    try:
        return trainer.loggers[0].log_dir
    except Exception:  # loggers without a directory
        return None
