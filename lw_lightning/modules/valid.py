"""Evaluation batches may flag samples whose file could not be decoded (``valid=False``).

The DataModules never substitute another sample in evaluation (that would change the metric):
they send a placeholder of the right shape, flagged. The modules drop flagged samples before the
forward pass and count them, so metrics cover exactly the readable samples and the count of the
excluded ones is reported next to them.

Annotated samples whose file does not exist at all never reach a batch: the dataset counts them
when it is built (``missing``, ``data/missing.py``) and :func:`log_missing` reports that count once
per evaluation, next to the count of unreadable ones.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import DataLoader


def keep_valid(batch: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """(batch restricted to its valid samples, number dropped); unchanged when nothing is flagged.

    Every tensor or list whose leading length is the batch size is indexed; other entries are kept.
    """
    valid = batch.get("valid")
    if valid is None or bool(valid.all()):
        return batch, 0
    n = valid.shape[0]
    keep = valid.nonzero().flatten()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n:
            out[key] = value[keep.to(value.device)]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[int(i)] for i in keep]
        else:
            out[key] = value
    return out, int(n - keep.numel())


def missing_files(trainer: pl.Trainer, stage: str) -> int | None:
    """Annotated samples without a file in the datasets evaluated at ``stage`` ("val" or "test"),
    or None when no dataset keeps that count (synthetic data, hand-made loaders)."""
    loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    elif not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    counts = [getattr(dl.dataset, "missing", None) for dl in loaders if isinstance(dl, DataLoader)]
    counts = [int(c) for c in counts if c is not None]
    return sum(counts) if counts else None


def log_missing(module: pl.LightningModule, stage: str, kind: str) -> None:
    """Log ``{stage}/missing_{kind}`` (kind: images or videos) from an ``on_*_epoch_end`` hook.

    Every rank built the same dataset and holds the whole split's count (its loader shards only
    the files that exist), so the ranks agree and "max" keeps the number exact under DDP.
    """
    missing = missing_files(module.trainer, stage)
    if missing is not None:
        module.log(f"{stage}/missing_{kind}", float(missing), sync_dist=True, reduce_fx="max")
