"""FLOPs per sample with ``torch.utils.flop_counter`` (MACs = FLOPs / 2, the papers' "FLOPs")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Total FLOPs (matmuls, convolutions, attention) executed by ``fn(*args, **kwargs)``.

    Attention runs on the math SDPA backend while counting: the CPU flash kernel has no FLOP
    formula registered and would be missed (2·N²·d MACs per layer: 23% of ViT-B at 518 px).
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def image_model_flops(model: torch.nn.Module, size: tuple[int, int], k: int | float | None = None, device: str = "cpu") -> int:
    """FLOPs of one forward pass on a single ``size`` image (``k`` for LookWhere models)."""
    images = torch.zeros(1, 3, *size, device=device)
    model = model.eval()
    if k is None:
        return count_flops(model, images)
    return count_flops(model, images, k=k)
