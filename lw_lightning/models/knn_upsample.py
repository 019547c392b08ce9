"""Dense features on the full patch grid from k sparse tokens (LookWhere's K-NN upsampling)."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_coords(grid: tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """Float coordinates of every cell of a grid, row-major, (N, len(grid)): (row, col) for a
    ``gh×gw`` patch grid, (t, row, col) for a ``nt×nh×nw`` tubelet grid."""
    axes = [torch.arange(g, device=device, dtype=torch.float32) for g in grid]
    return torch.cartesian_prod(*axes) if len(axes) > 1 else axes[0].unsqueeze(1)


def knn_upsample(tokens: Tensor, index: Tensor, grid: tuple[int, ...], knn: int = 5, eps: float = 1e-8) -> Tensor:
    """Fill the whole grid from the tokens at ``index`` by inverse-distance K-NN interpolation.

    For every cell, the ``knn`` nearest selected cells (Euclidean distance in grid units) are
    averaged with weights ``1 / (d + eps)``, normalised to sum to one (the reference formula).
    Selected cells then get their own token exactly (the reference's 1e8 weight, without rounding).

    Args:
        tokens: (B, k, D) features of the selected cells.
        index: (B, k) flat row-major indices of the selected cells.
        grid: (gh, gw), or (nt, nh, nw) for video tubelets (distances in grid units on every axis).
    Returns:
        (B, gh*gw, D) features.
    """
    b, k, d = tokens.shape
    coords = grid_coords(grid, tokens.device)  # (N, axes)
    n, axes = coords.shape
    sel = coords[index]  # (B, k, axes)
    # exact distances: the matmul-based cdist path can turn a zero distance into ~1e-3
    dist = torch.cdist(coords.expand(b, n, axes), sel, compute_mode="donot_use_mm_for_euclid_dist")
    kk = min(knn, k)
    near_d, near_i = dist.topk(kk, dim=-1, largest=False)  # (B, N, kk)
    w = 1.0 / (near_d + eps)
    w = w / w.sum(-1, keepdim=True)
    picked = tokens.gather(1, near_i.reshape(b, n * kk, 1).expand(-1, -1, d)).reshape(b, n, kk, d)
    out = (picked * w.unsqueeze(-1).to(tokens.dtype)).sum(2)
    return out.scatter(1, index.unsqueeze(-1).expand(-1, -1, d), tokens)
