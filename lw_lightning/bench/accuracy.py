"""Accuracy vs FLOPs of trained classifier checkpoints, side by side on the same split.

Each entry of ``bench.accuracy.runs`` names the experiment recipe a checkpoint was trained with
(so data and model are built the same way) and the checkpoint. A LookWhere run is evaluated at
every k with one selector pass per batch; a full-resolution ViT run once. FLOPs are counted on
the meta device with the same counter as the ``images`` suite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, load_config
from ..flops import count_flops
from ..models.config import resolve_k
from ..models.lookwhere import LookWhere, build_model
from .common import Env
from .config import AccuracyRun, AccuracySuite


def run_accuracy(suite: AccuracySuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    if not suite.runs:
        log("accuracy: skipped (list trained checkpoints in bench.accuracy.runs)")
        return []
    for run in suite.runs:  # fail before any evaluation, not after the first run
        if not Path(run.ckpt_path).is_file():
            raise ConfigError(f"bench.accuracy.runs: checkpoint not found: {run.ckpt_path}")
        if not Path(run.config).is_file():
            raise ConfigError(f"bench.accuracy.runs: recipe not found: {run.config}")
    rows: list[dict[str, Any]] = []
    for run in suite.runs:
        rows += evaluate_run(run, suite, env, log)
    return rows


def evaluate_run(run: AccuracyRun, suite: AccuracySuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Top-1 of one checkpoint on ``suite.split`` (at each k for LookWhere) and its FLOPs per image."""
    from ..tasks import build  # Lightning and data imports only when used

    cfg = load_config([run.config], list(run.overrides))
    _, module, datamodule = build(cfg, "validate")
    # weights_only=False: Lightning checkpoints hold hyper-parameters and loop state, not only
    # tensors; these are files this project wrote
    state = torch.load(run.ckpt_path, map_location="cpu", weights_only=False)
    module.load_state_dict(state.get("state_dict", state))
    module.to(env.device).eval()
    datamodule.setup("validate" if suite.split == "val" else "test")
    loader = datamodule.val_dataloader() if suite.split == "val" else datamodule.test_dataloader()
    net = module.net
    lookwhere = isinstance(net, LookWhere)
    ks = list(run.ks if run.ks is not None else suite.ks) if lookwhere else [None]
    correct = [0] * len(ks)
    seen = 0
    size: tuple[int, int] | None = None
    with torch.inference_mode(), env.autocast():
        for i, batch in enumerate(loader):
            if suite.max_batches is not None and i >= suite.max_batches:
                break
            images, labels = batch["image"].to(env.device), batch["label"].to(env.device)
            size = (images.shape[-2], images.shape[-1])
            if lookwhere:
                grid = net.grid(images)
                sel = net.selector(images, grid)  # once for every k
                feats = [net.extract(images, sel, grid, k=k)["cls"] for k in ks]
            else:
                feats = [net(images)["cls"]]
            for j, f in enumerate(feats):
                correct[j] += int((module.head(f).argmax(-1) == labels).sum())
            seen += labels.shape[0]
    if not seen or size is None:
        raise ConfigError(f"bench.accuracy: the {suite.split} loader of {run.config} yielded no batches")
    with torch.device("meta"):
        meta = build_model(module.model_cfg).eval()
        x = torch.zeros(1, 3, *size)
    n = (size[0] // module.model_cfg.patch_size) * (size[1] // module.model_cfg.patch_size)
    name = ("LookWhere" if lookwhere else "ViT") + f"-{module.model_cfg.preset}"
    rows = []
    for k, c in zip(ks, correct):
        flops = count_flops(lambda: meta(x, k=k) if lookwhere else meta(x))
        rows.append(dict(model=name, label=run.label or name, size=f"{size[0]}x{size[1]}", k=k,
                         tokens=n if k is None else resolve_k(k, n), flops=flops, acc1=c / seen, samples=seen, split=suite.split))
        log(f"accuracy {run.label or name} k={k}: top-1 {c / seen:.4f} at {flops / 2e9:.3f} GMACs")
    return rows
