"""Worker-side clip geometry on uint8 frames: short-side resize, scale-jitter / centre / three-crop
views (the photometric half runs batched on the device, :class:`..video_augment.VideoAugment`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# ------------------------------------------------------------------------------------------------
# worker-side clip geometry on uint8 frames (the photometric half is video_augment.VideoAugment)
# ------------------------------------------------------------------------------------------------


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``[T, C, H, W]`` (any strides) -> ``size``, antialiased bilinear on uint8 (no float copy)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """``(H, W)`` after resizing the short side to ``size`` (aspect kept)."""
    scale = size / min(h, w)
    return max(size, round(h * scale)), max(size, round(w * scale))


def three_crop_offsets(h: int, w: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """Top-left corners of 1 (centre) or 3 (start / centre / end along the long side) crops."""
    cy, cx = (h - size) // 2, (w - size) // 2
    if num_crops == 1:
        return [(cy, cx)]
    if num_crops != 3:
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    if w >= h:
        return [(cy, 0), (cy, cx), (cy, w - size)]
    return [(0, cx), (cy, cx), (h - size, cx)]


@dataclass(frozen=True)
class CropPlan:
    """How one training clip is cut: the decoder's output size (None: as stored), the frame size the
    box refers to, the box (top, left, height, width) and the output side."""

    decode_size: tuple[int, int] | None
    frame: tuple[int, int]
    box: tuple[int, int, int, int]
    out: int


class ClipTransform:
    """Geometry of training and evaluation clips, on uint8 frames in the DataLoader workers.

    Train: short-side scale jitter + random crop, or random-resized crop. Eval: short-side resize
    + 1 or 3 crops. Output uint8 ``[T, s, s, 3]`` (channels last, as decoders produce them: no
    transposing copy in the worker); flip, colour and normalisation follow on the device.

    The crop is cut first and only the box is resized (uint8 antialiased bilinear), so a worker
    never resizes pixels it then throws away. When the source is ``decoder_resize_ratio`` times
    or more larger than what the clip needs (e.g. 720p for a 256-320 short side), the decoder
    delivers the frames already at the needed size instead (null: never).
    """

    def __init__(
        self, img_size: int, train_short_side: Sequence[int], eval_short_side: int, train_crop: str,
        rrc_scale: Sequence[float] = (0.25, 1.0), decoder_resize_ratio: float | None = 1.5,
    ) -> None:
        if train_crop not in ("scale_jitter", "random_resized"):
            raise ValueError(f"train_crop must be 'scale_jitter' or 'random_resized', got {train_crop!r}")
        if decoder_resize_ratio is not None and decoder_resize_ratio < 1:
            raise ValueError(f"decoder_resize_ratio must be >= 1 or null, got {decoder_resize_ratio}")
        self.img_size = img_size
        self.train_short_side = (int(train_short_side[0]), int(train_short_side[-1]))
        self.eval_short_side = eval_short_side
        self.train_crop = train_crop
        self.rrc_scale = tuple(rrc_scale)
        self.ratio = decoder_resize_ratio

    def without_decoder_resize(self) -> ClipTransform:
        """The same geometry with every resize done in the worker (``decoder_resize_ratio: null``)."""
        other = copy.copy(self)
        other.ratio = None
        return other

    def _decoder_resizes(self, have: float, need: float) -> bool:
        return self.ratio is not None and have >= self.ratio * need

    def train_plan(self, h: int, w: int) -> CropPlan:
        """Draw one training crop of an ``h x w`` source (torch RNG: the worker's seeded stream)."""
        s = self.img_size
        if self.train_crop == "scale_jitter":
            lo, hi = self.train_short_side
            rh, rw = short_side_size(h, w, int(torch.randint(lo, hi + 1, (1,))))
            top, left = int(torch.randint(rh - s + 1, (1,))), int(torch.randint(rw - s + 1, (1,)))
            if self._decoder_resizes(min(h, w), min(rh, rw)):
                return CropPlan((rh, rw), (rh, rw), (top, left, s, s), s)
            # the same box in source pixels
            bh, bw = min(h, max(1, round(s * h / rh))), min(w, max(1, round(s * w / rw)))
            return CropPlan(None, (h, w), (min(round(top * h / rh), h - bh), min(round(left * w / rw), w - bw), bh, bw), s)
        from torchvision.transforms import v2

        top, left, ch, cw = v2.RandomResizedCrop.get_params(torch.empty(1, h, w), list(self.rrc_scale), [3 / 4, 4 / 3])  # type: ignore[arg-type]
        if self._decoder_resizes(min(ch, cw), s):
            dh, dw = max(s, round(h * s / ch)), max(s, round(w * s / cw))
            return CropPlan((dh, dw), (dh, dw), (min(round(top * s / ch), dh - s), min(round(left * s / cw), dw - s), s, s), s)
        return CropPlan(None, (h, w), (top, left, ch, cw), s)

    def apply(self, frames: np.ndarray, plan: CropPlan) -> Tensor:
        """Cut ``[T, H, W, 3]`` frames by ``plan`` -> uint8 ``[T, s, s, 3]``."""
        top, left, bh, bw = plan.box
        x = torch.from_numpy(frames).permute(0, 3, 1, 2)[..., top : top + bh, left : left + bw]  # views
        return _resize(x, (plan.out, plan.out)).permute(0, 2, 3, 1).contiguous()

    def train(self, frames: np.ndarray) -> Tensor:
        """A random training crop of already decoded ``[T, H, W, 3]`` frames."""
        return self.apply(frames, self.train_plan(*frames.shape[1:3]))

    def eval_decode_size(self, h: int, w: int) -> tuple[int, int] | None:
        """Frame size to ask the decoder for in evaluation (None: as stored)."""
        if h <= 0 or w <= 0 or not self._decoder_resizes(min(h, w), self.eval_short_side):
            return None
        return short_side_size(h, w, self.eval_short_side)

    def eval(self, clips: np.ndarray, num_crops: int) -> Tensor:
        """``[n, T, H, W, 3]`` -> uint8 ``[n·num_crops, T, s, s, 3]`` (clip-major view order)."""
        views = []
        s = self.img_size
        for frames in clips:
            x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            x = _resize(x, short_side_size(*x.shape[-2:], self.eval_short_side))
            for top, left in three_crop_offsets(*x.shape[-2:], s, num_crops):
                views.append(x[..., top : top + s, left : left + s].permute(0, 2, 3, 1))
        return torch.stack(views)
