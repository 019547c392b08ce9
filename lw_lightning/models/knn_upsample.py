"""Dense features on the full patch grid from k sparse tokens (LookWhere's K-NN upsampling)."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_coords(grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """(row, col) float coordinates of every cell of a ``gh×gw`` grid, row-major, (N, 2)."""
    gh, gw = grid
    rows = torch.arange(gh, device=device, dtype=torch.float32)
    cols = torch.arange(gw, device=device, dtype=torch.float32)
    return torch.cartesian_prod(rows, cols)


def knn_upsample(tokens: Tensor, index: Tensor, grid: tuple[int, int], knn: int = 5, eps: float = 1e-8) -> Tensor:
    """Fill the whole grid from the tokens at ``index`` by inverse-distance K-NN interpolation.

    For every cell, the ``knn`` nearest selected cells (Euclidean distance in grid units) are
    averaged with weights ``1 / (d + eps)``, normalised to sum to one (the reference formula).
    Selected cells then get their own token exactly (the reference's 1e8 weight, without rounding).

    Args:
        tokens: (B, k, D) features of the selected cells.
        index: (B, k) flat row-major indices of the selected cells.
        grid: (gh, gw).
    Returns:
        (B, gh*gw, D) features.
    """
    b, k, d = tokens.shape
    coords = grid_coords(grid, tokens.device)  # (N, 2)
    n = coords.shape[0]
    sel = coords[index]  # (B, k, 2)
    # exact distances: the matmul-based cdist path can turn a zero distance into ~1e-3
    dist = torch.cdist(coords.expand(b, n, 2), sel, compute_mode="donot_use_mm_for_euclid_dist")
    kk = min(knn, k)
    near_d, near_i = dist.topk(kk, dim=-1, largest=False)  # (B, N, kk)
    w = 1.0 / (near_d + eps)
    w = w / w.sum(-1, keepdim=True)
    picked = tokens.gather(1, near_i.reshape(b, n * kk, 1).expand(-1, -1, d)).reshape(b, n, kk, d)
    out = (picked * w.unsqueeze(-1).to(tokens.dtype)).sum(2)
    return out.scatter(1, index.unsqueeze(-1).expand(-1, -1, d), tokens)
