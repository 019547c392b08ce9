"""Optimizer parameter groups and the per-step warmup + cosine schedule shared by all tasks."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

#: Parameter names (suffixes) never decayed, as timm's ``no_weight_decay()``: embeddings/tokens.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "time_embed", "temporal_cls_token")


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    lr: float | None = None,
    lr_scales: dict[str, float] | None = None,
) -> list[dict]:
    """AdamW groups: decay on weight matrices / conv kernels only; none on norms, biases,
    LayerScale gammas, positional embeddings and CLS/register tokens. Frozen params are skipped.

    ``lr_scales`` maps a parameter-name prefix (e.g. ``"net.selector."``) to a multiplier of ``lr``;
    those parameters get their own groups (the schedule scales every group alike).
    """
    scales = sorted((lr_scales or {}).items(), key=lambda kv: -len(kv[0]))  # longest prefix wins
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        decay = not (p.ndim < 2 or name.split(".")[-1] in NO_DECAY_NAMES or name.endswith(".gamma"))
        scale = next((s for prefix, s in scales if name.startswith(prefix)), 1.0)
        groups.setdefault((scale, decay), []).append(p)
    groups.setdefault((1.0, True), [])  # keep the decayed group first, even when empty
    out = []
    for (scale, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0] != 1.0, not kv[0][1])):
        if not params and not (scale == 1.0 and decay):
            continue
        group: dict = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("param_groups: lr_scales needs lr")
            group["lr"] = lr * scale
        out.append(group)
    return out


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float, warmup_start_ratio: float = 1e-3
) -> float:
    """LR multiplier: linear warmup from ``warmup_start_ratio`` to 1, then cosine to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_ratio + (1.0 - warmup_start_ratio) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.01) -> LambdaLR:
    """Per-step schedule (use with ``"interval": "step"``)."""
    return LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, warmup_steps, total_steps, min_lr_ratio))


def resolve_warmup(warmup: int | float, total_steps: int) -> int:
    """Warmup given as steps (int) or as a fraction of the run (float < 1)."""
    if isinstance(warmup, float) and warmup < 1.0:
        return int(round(warmup * total_steps))
    return int(warmup)


def scheduled(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int | float, min_lr_ratio: float) -> dict:
    """Lightning's ``configure_optimizers`` dict: ``optimizer`` with the per-step warmup + cosine."""
    scheduler = warmup_cosine(optimizer, resolve_warmup(warmup, total_steps), total_steps, min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def adamw_warmup_cosine(
    named: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    total_steps: int,
    warmup: int | float,
    min_lr_ratio: float,
    lr_scales: dict[str, float] | None = None,
) -> dict:
    """AdamW (0.9, 0.999) over :func:`param_groups`, stepped by :func:`scheduled`."""
    optimizer = torch.optim.AdamW(param_groups(named, weight_decay, lr, lr_scales), lr=lr, betas=(0.9, 0.999))
    return scheduled(optimizer, total_steps, warmup, min_lr_ratio)
