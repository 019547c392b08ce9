"""Accuracy vs FLOPs of trained classifier checkpoints, side by side on the same split.

Each entry of ``bench.accuracy.runs`` names the experiment recipe a checkpoint was trained with
(so data and model are built the same way) and the checkpoint. A LookWhere run is evaluated at
every k with one selector pass per batch (``ImageClassifier``'s ``eval_ks``); a full-resolution
ViT run once. FLOPs are counted on the meta device with the same counter as the ``images`` suite.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lw_lightning.config import load_config
from lw_lightning.errors import ConfigError
from lw_lightning.flops import image_model_flops
from lw_lightning.models.config import resolve_k
from lw_lightning.models.lookwhere import build_model

from .common import Env
from .config import AccuracyRun, AccuracySuite


def run_accuracy(suite: AccuracySuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    if not suite.runs:
        log("accuracy: skipped (list trained checkpoints in bench.accuracy.runs)")
        return []
    for run in suite.runs:  # fail before any evaluation, not after the first run
        if not Path(run.ckpt_path).is_file():
            raise ConfigError(f"bench.accuracy.runs: checkpoint not found: {run.ckpt_path}")
        if str(run.config).endswith((".yaml", ".yml")) and not Path(run.config).is_file():
            raise ConfigError(f"bench.accuracy.runs: config file not found: {run.config}")
    rows: list[dict[str, Any]] = []
    for run in suite.runs:
        rows += evaluate_run(run, suite, env, log)
    return rows


def evaluate_run(run: AccuracyRun, suite: AccuracySuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Top-1 of one checkpoint on ``suite.split`` (at each k for LookWhere) and its FLOPs per image.

    Evaluation is the recipe's own ``validate``/``test`` run with ``module.eval_ks`` set to the
    suite's k values, so the numbers are exactly what that command reports (one selector pass per
    batch for all k); no logger, callbacks or run directory.
    """
    from lw_lightning.tasks import run as run_command  # Lightning and data imports only when used

    lookwhere = load_config(run.config, list(run.overrides), evaluation=True).module.model.get("arch", "lookwhere") == "lookwhere"
    ks = list(run.ks if run.ks is not None else suite.ks) if lookwhere else []
    limit = "limit_val_batches" if suite.split == "val" else "limit_test_batches"
    overrides = [
        *run.overrides,
        f"ckpt_path={run.ckpt_path}",
        "logger=null",
        "callbacks=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.devices=1",
        f"trainer.accelerator={env.device.type if env.device.type == 'cpu' else 'gpu'}",
        f"trainer.precision={'32-true' if env.dtype == torch.float32 else 'bf16-mixed'}",
        *([f"module.eval_ks={ks}"] if lookwhere else []),
        *([f"trainer.{limit}={suite.max_batches}"] if suite.max_batches is not None else []),
    ]
    with tempfile.TemporaryDirectory(prefix="lw_bench_acc_") as scratch:  # the run's summary file, nothing kept
        cfg = load_config(
            run.config, [*overrides, f"output_dir={scratch}", f"trainer.default_root_dir={scratch}"], evaluation=True
        )
        result = run_command(cfg, "validate" if suite.split == "val" else "test")
    module, datamodule = result.module, result.datamodule
    dataset = datamodule.datasets[suite.split]
    samples = (
        len(dataset)
        if suite.max_batches is None
        else min(len(dataset), suite.max_batches * datamodule.eval_batch_size_per_device)
    )
    size = tuple(dataset[0]["image"].shape[-2:])
    with torch.device("meta"):
        meta = build_model(module.model_cfg)
    n = (size[0] // module.model_cfg.patch_size) * (size[1] // module.model_cfg.patch_size)
    name = {"lookwhere": "LookWhere", "vit": "ViT", "tokenlearner": "TokenLearner-ViT"}[
        module.model_cfg.arch
    ] + f"-{module.model_cfg.preset}"
    rows = []
    for k in ks or [None]:
        acc = result.metrics[f"{suite.split}/acc1" if k is None else f"{suite.split}/acc1_k/{k}"]
        flops = image_model_flops(meta, size, k=k, device="meta")
        rows.append(
            dict(
                model=name,
                label=run.label or name,
                size=f"{size[0]}x{size[1]}",
                k=k,
                tokens=n if k is None else resolve_k(k, n),
                flops=flops,
                acc1=acc,
                samples=samples,
                split=suite.split,
                num_classes=getattr(datamodule, "num_classes", None),
            )
        )
        log(f"accuracy {run.label or name} k={k}: top-1 {acc:.4f} at {flops / 2e9:.3f} GMACs")
    return rows
