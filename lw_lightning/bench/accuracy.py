"""Accuracy vs FLOPs of a trained classifier checkpoint, LookWhere at several k (one selector pass).

Needs ``bench.accuracy.config`` (the experiment recipe the checkpoint was trained with, so data
and model are built the same way) and ``bench.accuracy.ckpt_path``; skipped otherwise.
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
from .config import AccuracySuite


def run_accuracy(suite: AccuracySuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    if not (suite.config and suite.ckpt_path):
        log("accuracy: skipped (set bench.accuracy.config and bench.accuracy.ckpt_path)")
        return []
    if not Path(suite.ckpt_path).is_file():
        raise ConfigError(f"bench.accuracy.ckpt_path not found: {suite.ckpt_path}")
    from ..tasks import build  # Lightning and data imports only when used

    cfg = load_config([suite.config], list(suite.overrides))
    _, module, datamodule = build(cfg, "validate")
    state = torch.load(suite.ckpt_path, map_location="cpu", weights_only=False)
    module.load_state_dict(state.get("state_dict", state))
    module.to(env.device).eval()
    datamodule.setup("validate")
    net = module.net
    lookwhere = isinstance(net, LookWhere)
    ks = list(suite.ks) if lookwhere else [None]
    correct = [0] * len(ks)
    seen = 0
    size: tuple[int, int] | None = None
    with torch.inference_mode(), env.autocast():
        for i, batch in enumerate(datamodule.val_dataloader()):
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
        raise ConfigError("bench.accuracy: the validation loader yielded no batches")
    with torch.device("meta"):
        meta = build_model(module.model_cfg).eval()
        x = torch.zeros(1, 3, *size)
    n = (size[0] // module.model_cfg.patch_size) * (size[1] // module.model_cfg.patch_size)
    rows = []
    for k, c in zip(ks, correct):
        flops = count_flops(lambda: meta(x, k=k) if lookwhere else meta(x))
        rows.append(dict(model=("LookWhere" if lookwhere else "ViT") + f"-{module.model_cfg.preset}", size=f"{size[0]}x{size[1]}",
                         k=k, tokens=n if k is None else resolve_k(k, n), flops=flops, acc1=c / seen, samples=seen))
        log(f"accuracy k={k}: top-1 {c / seen:.4f} at {flops / 2e9:.2f} GMACs")
    return rows
