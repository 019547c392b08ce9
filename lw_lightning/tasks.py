"""Run a resolved config: build data, module, callbacks, logger and trainer, then call the command."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .callbacks.model_summary import ModelSummary
from .callbacks.perf import FlopsPerSample
from .callbacks.predictions import PredictionWriter
from .callbacks.save_config import SaveConfig
from .callbacks.sigterm import SigtermCheckpoint, StoppedBySignal
from .checkpoint_io import AtomicCheckpointIO
from .config import ConfigError, to_yaml
from .console import drop_lightning_noise, evaluation_restore
from .models.checkpoint import check_state_dict, legacy_configs, read_weights
from .run_lock import hold_run_folder
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
    """Module arguments known only once the DataModule exists (``num_classes`` read from the
    dataset's files, ``class_weights`` counted from its training labels): no interpolation can
    give them, so they are passed to the module's constructor when its config leaves them unset."""
    target = get_object(str(cfg.module["_target_"]))
    params = inspect.signature(target.__init__).parameters
    links: dict[str, Any] = {}
    for name in ("num_classes", "class_weights"):
        if name in params and cfg.module.get(name) is None and getattr(datamodule, name, None) is not None:
            value = getattr(datamodule, name)
            links[name] = [float(v) for v in value] if name == "class_weights" else value
    return links


def _build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with plain containers for the arguments (our modules take dicts
    and lists, and save them as hyperparameters), and the constructor's own error instead of
    Hydra's wrapper: a ConfigError as it is, a TypeError/ValueError/missing file as a ConfigError."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError, FileNotFoundError)):
            raise ConfigError(f"invalid configuration: {cause}") from cause
        if cause is not None:
            raise cause from None  # the constructor's own error, without Hydra's wrapper
        raise ConfigError(f"invalid configuration: {str(err).splitlines()[0]}") from err


def build(cfg: DictConfig, command: str) -> tuple[pl.Trainer, pl.LightningModule, pl.LightningDataModule]:
    """Instantiate everything a command needs. Mistakes in arguments surface as ConfigError."""
    datamodule = _build(cfg.data)
    module = _build(cfg.module, **_links(cfg, datamodule))
    callbacks = [_build(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    logger = _build(cfg.logger) if cfg.get("logger") else False
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
    else:
        callbacks.append(RequireTrainingBatches())
    trainer_kw: dict[str, Any] = {}
    if command == "fit" and cfg.trainer.get("enable_model_summary", True) is not False:
        # ours (a true FLOP count or none), after FlopsPerSample; Lightning adds its own unless told not to
        callbacks.append(ModelSummary())
        trainer_kw["enable_model_summary"] = False
    if not cfg.trainer.get("plugins"):
        trainer_kw["plugins"] = [AtomicCheckpointIO()]  # a checkpoint is replaced only by a complete file
    if cfg.trainer.get("default_root_dir") is None and cfg.get("output_dir"):
        # fast_dev_run drops the logger: keep its checkpoints under output_dir, not the cwd
        trainer_kw["default_root_dir"] = str(cfg.output_dir)
    trainer = _build(cfg.trainer, callbacks=callbacks, logger=logger, **trainer_kw)
    return trainer, module, datamodule


def find_last_checkpoint(cfg: DictConfig) -> tuple[Path, str | None] | None:
    """The run's newest ``last.ckpt`` and the logger version directory holding it.

    Looks in ``<save_dir>/<name>/version_*/checkpoints/`` of the configured logger (highest version
    first), or in ``<default_root_dir or output_dir>/checkpoints/`` for runs without a logger.
    """
    logger = cfg.get("logger")
    if logger:
        base = _logger_base(cfg)
        if logger.get("version") is not None:  # the user named the run: look there only
            d = base / (str(logger.version) if isinstance(logger.version, str) else f"version_{logger.version}")
            path = d / "checkpoints" / "last.ckpt"
            return (path, d.name) if path.is_file() else None
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


def _logger_base(cfg: DictConfig) -> Path:
    """``<save_dir>/<name>`` of the configured logger: the parent of its ``version_N`` folders."""
    logger = cfg.logger
    return Path(str(logger.get("save_dir", cfg.get("output_dir", ".")))) / str(logger.get("name", cfg.get("name", "")))


def _run_version_of(cfg: DictConfig, path: Path) -> str | None:
    """``version_N`` when ``path`` is ``<save_dir>/<name>/version_N/checkpoints/<file>`` of the
    configured logger (same save_dir and name), else None."""
    if not cfg.get("logger"):
        return None
    folder = path.resolve().parent
    if folder.name != "checkpoints" or not re.fullmatch(r"version_\d+", folder.parent.name):
        return None
    return folder.parent.name if folder.parent.parent == _logger_base(cfg).resolve() else None


def _with_logger_version(cfg: DictConfig, version: str) -> DictConfig:
    """``cfg`` logging into ``version`` unless the user set ``logger.version`` (or the logger has none)."""
    params = inspect.signature(get_object(str(cfg.logger["_target_"])).__init__).parameters
    if "version" not in params or cfg.logger.get("version") is not None:
        return cfg
    cfg = cfg.copy()
    OmegaConf.update(cfg, "logger.version", version, force_add=True)
    return cfg


def _resolve_ckpt_path(cfg: DictConfig, command: str) -> tuple[str | None, DictConfig]:
    """Resolve ``ckpt_path`` and adapt the config to it.

    * ``last``: the run's newest last.ckpt (see :func:`find_last_checkpoint`). Without one ``fit``
      starts from scratch (so one job script serves the first start and every requeue), other
      commands fail with a one-line error. A resumed ``fit`` keeps logging into that version.
    * ``best`` (evaluation): the best checkpoint recorded in the newest run's last.ckpt.
    * Evaluating a checkpoint of ``<save_dir>/<name>/version_N/checkpoints/`` logs into that
      version_N (summary, predictions, events next to the training run), unless the user set
      ``logger.version`` or another ``name``.
    * Evaluating any checkpoint skips ``module.model.pretrained``: the checkpoint's weights replace
      it anyway, and a moved or deleted pretrained file must not stop the evaluation.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None, cfg
    where = f"{_logger_base(cfg)}/version_*/checkpoints" if cfg.get("logger") else "checkpoints/"
    if ckpt_path == "best":
        if command == "fit":
            raise ConfigError("ckpt_path=best is for validate/test/predict; fit resumes from ckpt_path=last or a file")
        found = find_last_checkpoint(cfg)
        if found is None:
            raise ConfigError(f"ckpt_path=best: no last.ckpt found under {where} to read the best checkpoint from")
        path = _best_recorded_in(found[0])
    elif ckpt_path == "last":
        found = find_last_checkpoint(cfg)
        if found is None:
            if command != "fit":
                raise ConfigError(f"ckpt_path=last: no last.ckpt found under {where}")
            log.warning("ckpt_path=last: no last.ckpt under %s yet, starting from scratch", where)
            return None, cfg
        path = found[0]
    else:
        path = Path(str(ckpt_path)).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path not found: {ckpt_path}")
    version = _run_version_of(cfg, path)
    if version is not None and (command != "fit" or ckpt_path == "last"):
        cfg = _with_logger_version(cfg, version)
    if command != "fit" and OmegaConf.select(cfg, "module.model.pretrained") is not None:
        cfg = cfg.copy()
        OmegaConf.update(cfg, "module.model.pretrained", None)
        log.info("evaluating %s: module.model.pretrained is not loaded (the checkpoint holds all weights)", path)
    return str(path), cfg


#: module.model fields a pretrained file decides when the config leaves them null (LookWhere:
#: the selector head's r and the resize mode); the checkpoint's hparams record the decision.
DECIDED_BY_PRETRAINED = ("selector_r", "resize_mode")


def _decided_model_settings(cfg: DictConfig, ckpt: dict[str, Any]) -> DictConfig:
    """Take ``DECIDED_BY_PRETRAINED`` from the checkpoint's hyper-parameters where the config
    leaves them null: evaluation does not read ``module.model.pretrained``, and a resumed fit
    must build the model it saved."""
    saved = (ckpt.get("hyper_parameters") or {}).get("model")
    if not isinstance(saved, Mapping) or OmegaConf.select(cfg, "module.model") is None:
        return cfg
    fill = {
        k: saved[k]
        for k in DECIDED_BY_PRETRAINED
        if saved.get(k) is not None and OmegaConf.select(cfg, f"module.model.{k}") is None
    }
    if not fill:
        return cfg
    cfg = cfg.copy()
    for key, value in fill.items():
        OmegaConf.update(cfg, f"module.model.{key}", value, force_add=True)
    return cfg


def _best_recorded_in(last: Path) -> Path:
    """The ``best_model_path`` a monitoring ModelCheckpoint stored in ``last``."""
    ckpt = read_weights(last, "ckpt_path=best: checkpoint")
    for key, state in (ckpt.get("callbacks") or {}).items() if isinstance(ckpt, dict) else ():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if str(key).startswith("ModelCheckpoint") and best and "'monitor': None" not in str(key):
            if not Path(best).is_file():
                raise ConfigError(f"ckpt_path=best: {last} names {best}, which no longer exists")
            return Path(best)
    raise ConfigError(f"ckpt_path=best: {last} records no best checkpoint (no monitoring ModelCheckpoint)")


@dataclass
class CheckpointInfo:
    """What :func:`_inspect_checkpoint` keeps of a checkpoint (the file itself is released)."""

    path: str
    global_step: int
    epochs_done: int  # Lightning's epoch_progress.current.processed: what FitLoop.done compares to max_epochs


def _read_checkpoint(path: str) -> dict[str, Any]:
    """Load ``ckpt_path`` (memory-mapped) with one-line errors for an unreadable file or one that
    is not a Lightning checkpoint."""
    ckpt = read_weights(path, "ckpt_path")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        hint = (
            " (official LookWhere weights go to module.model.pretrained)"
            if isinstance(ckpt, dict) and "extractor" in ckpt
            else ""
        )
        raise ConfigError(f"ckpt_path {path} is not a Lightning checkpoint: it has no state_dict{hint}")
    return ckpt


def _inspect_checkpoint(path: str, ckpt: dict[str, Any], module: pl.LightningModule) -> CheckpointInfo:
    """A one-line error when the checkpoint holds weights of another architecture than the
    recipe's module (checked before anything is written for the run); its progress otherwise."""
    if getattr(module, "strict_loading", True):
        check_state_dict(module.state_dict(), ckpt["state_dict"], f"ckpt_path {path}")
    progress = (((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}).get("current") or {}
    return CheckpointInfo(path, int(ckpt.get("global_step", 0)), int(progress.get("processed", ckpt.get("epoch", 0))))


def _finished_note(info: CheckpointInfo, trainer: pl.Trainer) -> str | None:
    """Why resuming ``info`` would train nothing (the limits FitLoop.done checks), or None."""
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    if max_steps is not None and max_steps != -1 and info.global_step >= max_steps:
        reason = f"trainer.max_steps={max_steps}"
    elif max_epochs is not None and max_epochs != -1 and info.epochs_done >= max_epochs:
        reason = f"trainer.max_epochs={max_epochs}"
    else:
        return None
    return (
        f"already finished: {info.path} is at global step {info.global_step} (epoch {info.epochs_done}), "
        f"{reason} reached; nothing to train (raise the limit to continue)"
    )


class RequireTrainingBatches(pl.Callback):
    """Fails ``fit`` when the training loader yields no batch (e.g. fewer samples per device than
    one batch, with drop_last): Lightning would skip training and report success."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # estimated_stepping_batches (configure_optimizers) has set num_training_batches by now
        check_training_batches(trainer)


def check_training_batches(trainer: pl.Trainer) -> None:
    """Raise a one-line ConfigError when the training loader was set up and holds no batch."""
    if trainer.limit_train_batches == 0 or trainer.num_training_batches != 0:
        return  # limit_train_batches=0: no training asked for; inf: loader not set up yet
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    samples = f"{len(dataset)} training samples" if dataset is not None and hasattr(dataset, "__len__") else "the training set"
    batch = getattr(loader, "batch_size", None)
    devices = f" on each of {trainer.world_size} devices" if trainer.world_size > 1 else ""
    drop = " with drop_last" if getattr(loader, "drop_last", False) else ""
    raise ConfigError(
        f"no training batches: {samples} give no full batch of {batch}{devices}{drop}; add samples or lower data.batch_size"
    )


def check_predicts(module: pl.LightningModule) -> None:
    """A one-line error for a module without its own ``predict_step``: Lightning's default calls
    ``forward`` on the batch dict, which fails deep inside the model (or asks for a forward)."""
    if type(module).predict_step is pl.LightningModule.predict_step:
        name = f"{type(module).__module__}.{type(module).__qualname__}"
        raise ConfigError(
            f"predict: {name} has no predict_step, so there is nothing to write; the modules of the recipes in "
            "conf/experiment have one (classifiers, segmenters, LookWhere distillation)"
        )


def run(cfg: DictConfig, command: str) -> RunResult:
    """Seed, build, and run ``command`` (fit / validate / test / predict).

    A ``fit`` stopped by SIGTERM raises :class:`~lw_lightning.callbacks.sigterm.StoppedBySignal`
    after writing ``last.ckpt`` (see :mod:`lw_lightning.callbacks.sigterm`)."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown command '{command}'")
    drop_lightning_noise()
    ckpt_path, cfg = _resolve_ckpt_path(cfg, command)
    # an unreadable checkpoint fails before anything is built; the run dir does not exist yet
    ckpt = _read_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        cfg = _decided_model_settings(cfg, ckpt)
    warn_if_gpu_recipe_on_cpu(cfg, command)  # before building: a ViT-B recipe takes a while to build
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    trainer, module, datamodule = build(cfg, command)
    if command == "predict":
        check_predicts(module)
    warn_if_low_precision_on_cpu(trainer)
    info = _inspect_checkpoint(ckpt_path, ckpt, module) if ckpt_path is not None and ckpt is not None else None
    del ckpt  # Lightning loads it again itself; release the mapping
    log_dir = _planned_log_dir(trainer)
    if command == "fit" and info is not None and (note := _finished_note(info, trainer)) is not None:
        # resuming a finished run: keep its summary (the real final metrics), write nothing new
        log.info(note)
        return RunResult(_summary_metrics(log_dir), trainer, module, datamodule, log_dir, {"note": note})
    existed = log_dir is not None and Path(log_dir).exists()
    new_folders = _missing_folders(Path(log_dir)) if log_dir is not None else []
    started = time.time()
    with contextlib.ExitStack() as held:
        if command == "fit" and log_dir is not None:
            # taken before the try: a folder that another fit holds is never cleaned up below
            held.enter_context(hold_run_folder(log_dir))
        try:
            # Lightning reads ckpt_path again itself: weights only, as _read_checkpoint did
            with legacy_configs():
                if command == "fit":
                    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
                    check_training_batches(trainer)  # if on_fit_start could not tell yet
                else:
                    with evaluation_restore():
                        getattr(trainer, command)(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            stopper = next((c for c in trainer.callbacks if isinstance(c, SigtermCheckpoint)), None)  # type: ignore[attr-defined]
            if stopper is None:  # validate / test / predict: nothing to save, but not a success either
                raise StoppedBySignal(f"{command} stopped by SIGTERM before it finished; no results", None) from None
            raise stopper.report(trainer) from None
        except BaseException:
            if log_dir is not None and not existed and trainer.is_global_zero and _nothing_kept(Path(log_dir), trainer, command):
                # a failed start (a user mistake found while setting up, a crash before the first step):
                # leave no empty run folder behind
                shutil.rmtree(log_dir, ignore_errors=True)
                for folder in new_folders[1:]:  # runs/<name>/, runs/: those this run created, if empty
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
            raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, FlopsPerSample) and cb.flops is not None:
            metrics["perf/gflops_per_sample"] = cb.flops / 1e9
    result = RunResult(metrics, trainer, module, datamodule, log_dir)
    writer = next((c for c in trainer.callbacks if isinstance(c, PredictionWriter)), None)  # type: ignore[attr-defined]
    if writer is not None and (written := writer.written()):
        result.extras["written"] = written  # named by the command's final line
    if trainer.is_global_zero and not trainer.fast_dev_run:
        _write_summary(cfg, command, result, ckpt_path, time.time() - started)
    return result


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _nothing_kept(log_dir: Path, trainer: pl.Trainer, command: str) -> bool:
    """Whether a failed run's new folder holds nothing worth keeping: no checkpoint, no results,
    and (fit) no optimizer step whose curves its events would show."""
    if not log_dir.is_dir():
        return True
    if any(log_dir.rglob("*.ckpt")) or any(log_dir.glob("summary_*.json")) or any(log_dir.glob("predictions*.csv")):
        return False
    return command != "fit" or trainer.global_step == 0


def _summary_metrics(log_dir: str | None) -> dict[str, float]:
    """Metrics of the run's existing ``summary_fit.json`` (empty when there is none)."""
    path = Path(log_dir) / "summary_fit.json" if log_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).get("metrics", {}).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


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
