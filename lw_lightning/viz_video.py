"""Pictures of where video LookWhere looks: per clip, one row of temporal slices, each the slice's
central frame in grey with the selector map over that slice (heat), the kept tubelets (yellow) and, on
synthetic motion, the target's box (green)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import Tensor

from .viz import BOX_RGB, HEAT_RGB, SELECTED_RGB, picture_grid, selection_overlay

VIDEO_SELECTION_LEGEND: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("heat = selector map over the slice (frame in grey)", HEAT_RGB, "fill"),
    ("yellow = kept tubelets", SELECTED_RGB, "outline"),
    ("green = target box (synthetic motion)", BOX_RGB, "outline"),
)


def _as_imagenet(frame: Tensor) -> Tensor:
    """A frame in any normalisation, min-max stretched and re-normalised as :func:`~.viz.selection_overlay` reads it."""
    x = frame.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def slice_overlays(
    video: Tensor,
    selector_map: Tensor,
    selected: Tensor,
    grid: tuple[int, int, int],
    tubelet: tuple[int, int, int] | list[int],
    track: Tensor | None = None,
    cell: int = 96,
) -> list[Image.Image]:
    """One clip ``video`` (3, T, H, W): a ``cell``-px picture per temporal slice."""
    nt, nh, nw = grid
    t, h, w = (int(v) for v in tubelet)
    per = nh * nw
    smap = selector_map.detach().float().cpu().reshape(nt, per)
    sel = selected.detach().cpu()
    pictures = []
    for s in range(nt):
        f = s * t + t // 2
        frame = _as_imagenet(video[:, f, : nh * h, : nw * w])
        kept = sel[(sel // per) == s] - s * per
        box = track[f].tolist() if track is not None else None
        picture = selection_overlay(frame, smap[s], kept, h, box)
        pictures.append(picture.resize((cell, cell * picture.height // picture.width), Image.Resampling.NEAREST))
    return pictures


def video_selection_picture(
    video: Tensor,
    selector_map: Tensor,
    selected: Tensor,
    grid: tuple[int, int, int],
    tubelet: tuple[int, int, int] | list[int],
    track: Tensor | None = None,
    cell: int = 96,
) -> Image.Image:
    """Clips ``video`` (B, 3, T, H, W) with their maps (B, N) and kept tubelets (B, k): one row
    per clip, one column per temporal slice, with a legend."""
    cells = []
    for i in range(video.shape[0]):
        cells += slice_overlays(video[i], selector_map[i], selected[i], grid, tubelet, None if track is None else track[i], cell)
    legend = VIDEO_SELECTION_LEGEND if track is not None else VIDEO_SELECTION_LEGEND[:2]
    return picture_grid(cells, ncols=grid[0], pad=2, legend=legend)


def video_lookwhere_pictures(
    net: Any, batch: dict[str, Tensor], k: int | float | None, device: torch.device
) -> dict[str, Image.Image]:
    """``{"images/video_selection": picture}`` of a :class:`~lw_lightning.models.video_lookwhere.VideoLookWhere`
    on the clips of ``batch`` at ``k``: the first view of evaluation batches, target track when the batch has one."""
    video = batch["video"].to(device)
    if video.ndim == 6:  # evaluation views [B, V, C, T, H, W]: the first view
        video = video[:, 0]
    out = net(video, k=k)
    track = batch.get("track") if batch["video"].ndim == 5 else None
    return {
        "images/video_selection": video_selection_picture(
            video.cpu(), out["selector_map"], out["selected"], net.cfg.grid, net.cfg.tubelet, track
        )
    }
