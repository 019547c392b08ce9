"""Pictures of where the models look, for TensorBoard and the demo's PNGs.

* LookWhere: the selector map as a heat layer over the image, the selected high-res patches
  outlined, and the ground-truth sign box when the data has one (:func:`selection_overlay`).
* TokenLearner (images and ViViT): the input, then each learned token's attention map over it
  (:func:`token_map_row`).

Every heat layer is drawn by :func:`heat_layer`, over the image in grey (see there why).

The LightningModules build their pictures with these functions in their ``example_images`` hook,
which the :class:`~lw_lightning.callbacks.images.SelectionImages` callback calls; grids are
torchvision's ``make_grid``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

HEAT_RGB = (255, 30, 30)
SELECTED_RGB = (255, 230, 0)
BOX_RGB = (0, 255, 0)

#: what the layers of :func:`selection_overlay` mean: (text, colour, swatch kind) for :func:`legend_strip`
SELECTION_LEGEND: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("heat = selector map over the grey image (redder: ranked higher)", HEAT_RGB, "fill"),
    ("yellow = selected patches", SELECTED_RGB, "outline"),
    ("green = sign box (ground truth)", BOX_RGB, "outline"),
)


def denormalize(image: Tensor) -> np.ndarray:
    """(3,H,W) ImageNet-normalised tensor -> (H,W,3) uint8."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    x = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def heat_layer(rgb: np.ndarray, heat: Tensor, alpha: float = 0.6) -> Image.Image:
    """(H,W,3) uint8 image and its (H,W) ``heat`` (any range, min-max stretched) -> the image in
    grey with the heat blended over it in :data:`HEAT_RGB`, up to ``alpha`` where it is highest.

    The image goes grey because its own colours would read as heat: the synthetic backgrounds
    take every hue and the signs (and the motion target) are red, so no heat colour is absent
    from them. In grey, the heat is the only colour fill and the outlines the only other colours."""
    h = heat.detach().float().cpu()
    h = ((h - h.min()) / (h.max() - h.min() + 1e-8)).numpy()[..., None]
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
    out = luma[..., None] * (1 - alpha * h) + np.array(HEAT_RGB, dtype=np.float32) * (alpha * h)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def selection_overlay(
    image: Tensor,
    selector_map: Tensor | None,
    selected: Tensor | None,
    patch: int,
    box: Sequence[float] | None = None,
    alpha: float = 0.6,
) -> Image.Image:
    """The image with the selector map as a heat layer (:func:`heat_layer`), selected patches
    outlined in yellow and the ground-truth box (x0,y0,x1,y1; ignored when negative) in green."""
    rgb = denormalize(image)
    h, w = rgb.shape[:2]
    gh, gw = h // patch, w // patch
    if selector_map is not None:
        m = selector_map.detach().float().cpu().reshape(gh, gw)
        img = heat_layer(rgb, torch.kron(m, torch.ones(patch, patch)), alpha)
    else:
        img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    if selected is not None:
        for idx in selected.detach().cpu().tolist():
            r, c = divmod(int(idx), gw)
            draw.rectangle([c * patch, r * patch, (c + 1) * patch - 1, (r + 1) * patch - 1], outline=SELECTED_RGB)
    if box is not None and min(box) >= 0:
        draw.rectangle([float(v) for v in box], outline=BOX_RGB, width=2)
    return img


def legend_strip(width: int, entries: Sequence[tuple[str, tuple[int, int, int], str]], font_size: int = 14) -> Image.Image:
    """A white strip ``width`` px wide with one swatch and caption per entry, left to right;
    entries that do not fit on a line wrap to the next. Swatch kinds: "fill" or "outline"."""
    font = ImageFont.load_default(size=font_size)
    sw, gap, pad = font_size, font_size, font_size // 2
    lines: list[list[tuple[str, tuple[int, int, int], str, int]]] = [[]]
    x = pad
    for text, colour, kind in entries:
        item = sw + pad + int(font.getlength(text))
        if lines[-1] and x + item > width - pad:
            lines.append([])
            x = pad
        lines[-1].append((text, colour, kind, x))
        x += item + gap
    line_h = font_size + pad
    strip = Image.new("RGB", (width, pad + len(lines) * line_h), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for row, items in enumerate(lines):
        y = pad + row * line_h
        for text, colour, kind, x in items:
            box = [x, y, x + sw - 1, y + sw - 1]
            if kind == "fill":
                draw.rectangle(box, fill=colour)
            else:  # as drawn on the image: an outline (on grey, so yellow and green show on white)
                draw.rectangle(box, fill=(90, 90, 90), outline=colour, width=2)
            draw.text((x + sw + pad, y), text, fill=(0, 0, 0), font=font)
    return strip


def picture_grid(
    images: Sequence[Image.Image],
    ncols: int = 4,
    pad: int = 4,
    legend: Sequence[tuple[str, tuple[int, int, int], str]] | None = None,
) -> Image.Image:
    """Pictures of equal size in a white-padded grid (torchvision's ``make_grid``); ``legend``
    entries (e.g. :data:`SELECTION_LEGEND`) add a caption strip under it saying what the colours mean."""
    grid = to_pil_image(make_grid([pil_to_tensor(im.convert("RGB")) for im in images], nrow=ncols, padding=pad, pad_value=255))
    if not legend:
        return grid
    strip = legend_strip(grid.width, legend)
    canvas = Image.new("RGB", (grid.width, grid.height + strip.height), (255, 255, 255))
    canvas.paste(grid, (0, 0))
    canvas.paste(strip, (0, grid.height))
    return canvas


# ------------------------------------------------------------------------------------------
# the pictures of each model family (called by the modules' ``example_images`` hooks)
# ------------------------------------------------------------------------------------------


def _minmax_uint8(x: Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return (x.numpy() * 255).round().astype(np.uint8)


def heat_overlay(frame: Tensor, heat: Tensor, alpha: float = 0.6) -> Image.Image:
    """``frame`` (3,H,W) any range, ``heat`` (h,w) any range -> RGB picture, heat upsampled
    (nearest) over the frame by :func:`heat_layer`."""
    rgb = _minmax_uint8(frame).transpose(1, 2, 0)
    m = torch.nn.functional.interpolate(heat.detach().float().cpu()[None, None], size=rgb.shape[:2], mode="nearest")
    return heat_layer(rgb, m[0, 0], alpha)


def token_map_row(frame: Tensor, maps: Tensor, cell: int = 64) -> list[Image.Image]:
    """``frame`` (3,H,W) and its ``maps`` (S,h,w) -> ``cell``-px pictures: the frame, then one heat
    overlay per learned token."""
    size = (cell, cell)
    row = [Image.fromarray(_minmax_uint8(frame).transpose(1, 2, 0)).resize(size, Image.Resampling.NEAREST)]
    row.extend(heat_overlay(frame, maps[s]).resize(size, Image.Resampling.NEAREST) for s in range(maps.shape[0]))
    return row


def tokenlearner_maps(net: torch.nn.Module) -> Tensor | None:
    """The ``[N, S, L]`` attention maps of the first TokenLearner in ``net`` from its latest call."""
    for module in net.modules():
        maps = getattr(module, "last_maps", None)
        if isinstance(maps, Tensor):
            return maps
    return None


def image_model_pictures(
    net: torch.nn.Module, images: Tensor, k: Any = None, boxes: Tensor | None = None, ncols: int = 4
) -> dict[str, Image.Image]:
    """Tag -> picture for an image backbone on ``images`` (B,3,H,W): LookWhere's selections at
    ``k`` (``images/selection``), a TokenLearner-ViT's token maps (``images/tokenlearner``), or
    nothing for the full-resolution ViT, which looks everywhere."""
    from .models.lookwhere import LookWhere
    from .models.tokenlearner_vit import TokenLearnerViT

    if isinstance(net, TokenLearnerViT):
        maps = net(images)["maps"]  # [B, S, gh*gw], row-major over the patch grid
        gh, gw = net.grid(images)
        maps = maps.reshape(maps.shape[0], maps.shape[1], gh, gw)
        cells = [cell for i in range(images.shape[0]) for cell in token_map_row(images[i], maps[i], cell=96)]
        return {"images/tokenlearner": picture_grid(cells, ncols=1 + maps.shape[1], pad=2)}
    if not isinstance(net, LookWhere):
        return {}
    out = net(images, k=k)
    overlays = [
        selection_overlay(
            images[i].cpu(),
            out["selector_map"][i],
            out["selected"][i],
            net.cfg.patch_size,
            boxes[i].tolist() if isinstance(boxes, Tensor) else None,
        )
        for i in range(images.shape[0])
    ]
    return {"images/selection": picture_grid(overlays, ncols=ncols)}


def video_token_pictures(net: torch.nn.Module, cfg: Any, video: Tensor) -> dict[str, Image.Image]:
    """ViViT with TokenLearner on clips (B,C,T,H,W), or evaluation views (B,V,C,T,H,W) of which
    the first is shown: per sample, one row per temporal slice (its middle frame, then each
    learned token's map over it), tag ``images/tokenlearner/<i>``. Empty without TokenLearner."""
    if video.ndim == 6:
        video = video[:, 0]
    if cfg.num_tokens <= 0:
        return {}
    net(video)
    maps = tokenlearner_maps(net)
    if maps is None:
        return {}
    b = video.shape[0]
    nt, nh, nw = cfg.grid
    tub_t = cfg.num_frames // nt
    if maps.shape[0] != b * nt or maps.shape[-1] != nh * nw:
        return {}  # TokenLearner placed where tokens no longer form the frame grid
    maps = maps.reshape(b, nt, maps.shape[1], nh, nw)
    result = {}
    for i in range(b):
        rows = []
        for t in range(nt):
            rows.extend(token_map_row(video[i, :, t * tub_t + tub_t // 2], maps[i, t]))
        result[f"images/tokenlearner/{i}"] = picture_grid(rows, ncols=1 + maps.shape[2], pad=2)
    return result
