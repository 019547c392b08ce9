"""Pictures of what LookWhere looks at: selector map heat, selected patches, ground-truth box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .data.synthetic_signs import IMAGENET_MEAN, IMAGENET_STD

HEAT_RGB = (255, 30, 30)
SELECTED_RGB = (255, 230, 0)
BOX_RGB = (0, 255, 0)

#: what the layers of :func:`selection_overlay` mean: (text, colour, swatch kind) for :func:`legend_strip`
SELECTION_LEGEND: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("heat = selector map (redder: ranked higher)", HEAT_RGB, "fill"),
    ("yellow = selected patches", SELECTED_RGB, "outline"),
    ("green = sign box (ground truth)", BOX_RGB, "outline"),
)


def denormalize(image: Tensor) -> np.ndarray:
    """(3,H,W) ImageNet-normalised tensor -> (H,W,3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def selection_overlay(
    image: Tensor,
    selector_map: Tensor | None,
    selected: Tensor | None,
    patch: int,
    box: Sequence[float] | None = None,
    alpha: float = 0.45,
) -> Image.Image:
    """The image with the selector map as a red heat layer, selected patches outlined in yellow
    and the ground-truth box (x0,y0,x1,y1; ignored when negative) in green."""
    rgb = denormalize(image)
    h, w = rgb.shape[:2]
    gh, gw = h // patch, w // patch
    out = rgb.astype(np.float32)
    if selector_map is not None:
        m = selector_map.detach().float().cpu().reshape(gh, gw)
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        heat = np.kron(m.numpy(), np.ones((patch, patch), dtype=np.float32))[..., None]
        red = np.array(HEAT_RGB, dtype=np.float32)
        out = out * (1 - alpha * heat) + red * (alpha * heat)
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
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


def tile(
    images: Sequence[Image.Image], ncols: int = 4, pad: int = 4, legend: Sequence[tuple[str, tuple[int, int, int], str]] | None = None
) -> Image.Image:
    """Images of equal size in a grid; ``legend`` entries (e.g. :data:`SELECTION_LEGEND`) add a
    caption strip under it saying what the colours mean."""
    w, h = images[0].size
    rows = (len(images) + ncols - 1) // ncols
    width = ncols * (w + pad) + pad
    strip = legend_strip(width, legend) if legend else None
    canvas = Image.new("RGB", (width, rows * (h + pad) + pad + (strip.height if strip else 0)), (255, 255, 255))
    for i, im in enumerate(images):
        canvas.paste(im, (pad + (i % ncols) * (w + pad), pad + (i // ncols) * (h + pad)))
    if strip is not None:
        canvas.paste(strip, (0, rows * (h + pad) + pad))
    return canvas
