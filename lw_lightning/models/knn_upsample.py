"""Dense features on the full patch grid from k sparse tokens (LookWhere's K-NN upsampling)."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_coords(grid: tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """Float coordinates of every cell of a grid, row-major, (N, len(grid)): (row, col) for a
    ``gh×gw`` patch grid, (t, row, col) for a ``nt×nh×nw`` tubelet grid."""
    axes = [torch.arange(g, device=device, dtype=torch.float32) for g in grid]
    return torch.cartesian_prod(*axes) if len(axes) > 1 else axes[0].unsqueeze(1)


TIE_BREAKS = ("topk", "argsort")


def knn_upsample(
    tokens: Tensor, index: Tensor, grid: tuple[int, ...], knn: int = 5, eps: float = 1e-8, tie_break: str = "topk"
) -> Tensor:
    """Fill the whole grid from the tokens at ``index`` by inverse-distance K-NN interpolation.

    For every cell, the ``knn`` nearest selected cells (Euclidean distance in grid units) are
    averaged with weights ``1 / (d + eps)``, normalised to sum to one (the reference formula).
    Selected cells then get their own token exactly (the reference's 1e8 weight, without rounding).

    On a grid many distances are equal, so which of the cells tied at the ``knn``-th distance is
    used depends on the selection op: ``tie_break="topk"`` takes ``topk(largest=False)``'s pick,
    ``"argsort"`` the first ``knn`` of a full ``argsort`` over the k distances, as the released
    inference code does (torch's default, unstable sort: the same op gives the same ties on the
    same device).

    Args:
        tokens: (B, k, D) features of the selected cells.
        index: (B, k) flat row-major indices of the selected cells.
        grid: (gh, gw), or (nt, nh, nw) for video tubelets (distances in grid units on every axis).
    Returns:
        (B, gh*gw, D) features.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    b, k, d = tokens.shape
    coords = grid_coords(grid, tokens.device)  # (N, axes)
    n, axes = coords.shape
    sel = coords[index]  # (B, k, axes)
    # exact distances: the matmul-based cdist path can turn a zero distance into ~1e-3
    dist = torch.cdist(coords.expand(b, n, axes), sel, compute_mode="donot_use_mm_for_euclid_dist")
    kk = min(knn, k)
    if tie_break == "argsort":
        near_i = dist.argsort(dim=-1)[..., :kk]
        near_d = dist.gather(-1, near_i)
    else:
        near_d, near_i = dist.topk(kk, dim=-1, largest=False)  # (B, N, kk)
    w = 1.0 / (near_d + eps)
    w = w / w.sum(-1, keepdim=True)
    picked = tokens.gather(1, near_i.reshape(b, n * kk, 1).expand(-1, -1, d)).reshape(b, n, kk, d)
    out = (picked * w.unsqueeze(-1).to(tokens.dtype)).sum(2)
    return out.scatter(1, index.unsqueeze(-1).expand(-1, -1, d), tokens)
