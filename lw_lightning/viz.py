"""Pictures of what LookWhere looks at: selector map heat, selected patches, ground-truth box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .data.synthetic_signs import IMAGENET_MEAN, IMAGENET_STD


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
        red = np.array([255.0, 30.0, 30.0], dtype=np.float32)
        out = out * (1 - alpha * heat) + red * (alpha * heat)
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if selected is not None:
        for idx in selected.detach().cpu().tolist():
            r, c = divmod(int(idx), gw)
            draw.rectangle([c * patch, r * patch, (c + 1) * patch - 1, (r + 1) * patch - 1], outline=(255, 230, 0))
    if box is not None and min(box) >= 0:
        draw.rectangle([float(v) for v in box], outline=(0, 255, 0), width=2)
    return img


def tile(images: Sequence[Image.Image], ncols: int = 4, pad: int = 4) -> Image.Image:
    """Images of equal size in a grid."""
    w, h = images[0].size
    rows = (len(images) + ncols - 1) // ncols
    canvas = Image.new("RGB", (ncols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, im in enumerate(images):
        canvas.paste(im, (pad + (i % ncols) * (w + pad), pad + (i // ncols) * (h + pad)))
    return canvas
