"""Evaluation batches may flag samples whose file could not be decoded (``valid=False``).

The DataModules never substitute another sample in evaluation (that would change the metric):
they send a placeholder of the right shape, flagged. The modules drop flagged samples before the
forward pass and count them, so metrics cover exactly the readable samples and the count of the
excluded ones is reported next to them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


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
