"""Train / eval transforms of the three image datasets (timm and torchvision v2 building blocks).

* ImageNet: timm's ``create_transform`` (DeiT recipe: bicubic RandomResizedCrop, flip,
  RandAugment ``rand-m9-mstd0.5-inc1``, RandomErasing) and its crop-ratio eval transform.
* ADE20K: torchvision v2 joint image+mask transforms (``tv_tensors.Mask`` is resized with nearest
  and padded with 255 by v2 itself); two small v2 transforms add mmsegmentation's semantics
  that v2 lacks: :class:`RandomRescale` (ratio of a (long, short) scale) and
  :class:`CatMaxRandomCrop` (``cat_max_ratio``).
* Traffic signs: v2 resize / ColorJitter / RandomAffine on image + ``BoundingBoxes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data import auto_augment as timm_auto_augment
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IGNORE_INDEX = 255


def size2(size: int | Sequence[int]) -> tuple[int, int]:
    """``int`` -> (s, s); ``[h, w]`` -> (h, w)."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


# ------------------------------------------------------------------------------------------
# ImageNet
# ------------------------------------------------------------------------------------------


def imagenet_train_transform(
    image_size: int | Sequence[int],
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
    scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.3,
    interpolation: str = "bicubic",
) -> Any:
    """DeiT train transform on a PIL image -> normalised float tensor.

    timm ignores ``color_jitter`` when ``auto_augment`` is set (as in DeiT).
    """
    h, w = size2(image_size)
    transform = create_transform(
        input_size=(3, h, w), is_training=True, scale=tuple(scale), hflip=hflip, color_jitter=color_jitter,
        auto_augment=auto_augment, interpolation=interpolation, re_prob=re_prob, re_mode="pixel", re_count=1,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
    )
    return patch_posterize(transform)


def _posterize_keep_bits(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize with its old meaning of 0 bits (a black image) restored.

    RandAugment ``inc1`` maps magnitudes >= 10 (reached with mstd 0.5 about 2% of the time) to
    0 bits; recent Pillow (13.0 here) rejects that with "bits must be between or equal to 1 and 8", which
    would kill a training run after a few thousand images. Older Pillow (and the TF reference)
    zeroed the image for 0 bits, so that is what we do.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def patch_posterize(transform: Any) -> Any:
    """Swap timm's posterize op for :func:`_posterize_keep_bits` inside a timm transform."""
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "aug_fn", None) is timm_auto_augment.posterize:
                op.aug_fn = _posterize_keep_bits
    return transform


def imagenet_eval_transform(image_size: int | Sequence[int], crop_pct: float = 0.875, interpolation: str = "bicubic") -> Any:
    """Resize to ``size / crop_pct`` (short side for square sizes) then center-crop ``size``."""
    h, w = size2(image_size)
    return create_transform(
        input_size=(3, h, w), is_training=False, crop_pct=crop_pct, interpolation=interpolation,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
    )


# ------------------------------------------------------------------------------------------
# generic v2 pieces
# ------------------------------------------------------------------------------------------


class PadToMultiple(v2.Transform):
    """Pad bottom/right so height and width are multiples of ``multiple`` (the ViT patch).

    Bottom/right padding keeps pixel and box coordinates unchanged.
    """

    def __init__(self, multiple: int, fill: Any = 0) -> None:
        super().__init__()
        self.multiple = multiple
        self.fill = fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        m = self.multiple
        return {"padding": [0, 0, (-w) % m, (-h) % m]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.fill.get(type(inpt), 0) if isinstance(self.fill, dict) else self.fill
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


def to_normalized() -> v2.Compose:
    """uint8 image -> float normalised with the ImageNet mean/std (masks and boxes untouched)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


# ------------------------------------------------------------------------------------------
# ADE20K (joint image + mask)
# ------------------------------------------------------------------------------------------


class RandomRescale(v2.Transform):
    """mmseg ``RandomResize(scale, ratio_range, keep_ratio=True)``.

    Draw r in ``ratio_range``; rescale keeping the aspect ratio so that the long side is at most
    ``max(scale) * r`` and the short side at most ``min(scale) * r``. Masks use nearest.
    """

    def __init__(self, scale: Sequence[int] = (2048, 512), ratio_range: Sequence[float] = (0.5, 2.0)) -> None:
        super().__init__()
        self.long, self.short = max(scale), min(scale)
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        lo, hi = self.ratio_range
        r = lo + float(torch.rand(())) * (hi - lo)
        factor = min(self.long * r / max(h, w), self.short * r / min(h, w))
        return {"size": [max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class CatMaxRandomCrop(v2.Transform):
    """Random crop of ``size`` (or of the whole side when the image is smaller) that avoids crops
    dominated by one class.

    mmseg ``RandomCrop(crop_size, cat_max_ratio)``: redraw the crop up to ``tries`` times while
    one class covers ``cat_max_ratio`` or more of the crop's labelled (non-ignore) pixels or
    fewer than two classes are present; the last draw is kept otherwise. Images smaller than the
    crop are padded later (:class:`PadToSize`, after normalisation, as mmseg's preprocessor does).
    """

    def __init__(self, size: int | Sequence[int], cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX, tries: int = 10) -> None:
        super().__init__()
        self.size = size2(size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.tries = tries

    def _acceptable(self, mask: torch.Tensor, p: dict[str, int]) -> bool:
        crop = mask[..., p["top"] : p["top"] + p["height"], p["left"] : p["left"] + p["width"]]
        counts = torch.bincount(crop.reshape(-1).long(), minlength=256)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        ch, cw = min(self.size[0], h), min(self.size[1], w)

        def draw() -> dict[str, int]:
            top = int(torch.randint(0, h - ch + 1, ()))
            left = int(torch.randint(0, w - cw + 1, ()))
            return {"top": top, "left": left, "height": ch, "width": cw}

        params = draw()
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        if masks and self.cat_max_ratio < 1.0:
            for _ in range(self.tries):
                if self._acceptable(masks[0], params):
                    break
                params = draw()
        return params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class PadToSize(v2.Transform):
    """Pad bottom/right up to ``size`` (no-op when already that large); ``fill`` per type."""

    def __init__(self, size: int | Sequence[int], fill: dict[type, Any]) -> None:
        super().__init__()
        self.size = size2(size)
        self.fill = fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        return {"padding": [0, 0, max(0, self.size[1] - w), max(0, self.size[0] - h)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=self.fill.get(type(inpt), 0))


class PhotoMetricDistortion(v2.RandomPhotometricDistort):
    """mmseg ``PhotoMetricDistortion`` via torchvision's SSD port, without its channel shuffle.

    Each of brightness, contrast, saturation and hue is applied with probability ``p``; contrast
    goes before or after the colour ops at random. mmseg's hue_delta=18 is in OpenCV's 0-180 hue
    unit, i.e. 0.1 of the hue circle; its additive brightness delta 32 is approximated by the
    multiplicative factor range (1 - 32/255, 1 + 32/255).
    """

    def __init__(self, p: float = 0.5) -> None:
        b = 32 / 255
        super().__init__(brightness=(1 - b, 1 + b), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.1, 0.1), p=p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        params["channel_permutation"] = None
        return params


def ade20k_train_transform(
    crop_size: int | Sequence[int] = 512,
    scale: Sequence[int] | None = None,
    ratio_range: Sequence[float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
) -> v2.Compose:
    """mmseg ADE20K train pipeline on ``{"image": Image uint8, "mask": Mask}``.

    ``scale`` defaults to (4 * crop, crop), i.e. mmseg's (2048, 512) for a 512 crop.
    """
    ch, cw = size2(crop_size)
    scale = tuple(scale) if scale is not None else (4 * max(ch, cw), min(ch, cw))
    return v2.Compose([
        RandomRescale(scale, ratio_range),
        CatMaxRandomCrop((ch, cw), cat_max_ratio),
        v2.RandomHorizontalFlip(0.5),
        PhotoMetricDistortion(),
        to_normalized(),
        # after normalisation, so padded pixels are exactly 0 (the mean colour); labels get ignore
        PadToSize((ch, cw), fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}),
    ])


def ade20k_eval_transform(image_size: int | Sequence[int] = 512, resize: str = "square", multiple: int = 14) -> v2.Compose:
    """Eval transform of the image only (labels stay at original resolution).

    ``resize="square"`` resizes the whole image to ``image_size`` (what a fixed-size model sees);
    ``"short_side"`` resizes the short side to ``min(image_size)`` keeping the aspect ratio and
    pads bottom/right to a multiple of ``multiple`` (for sliding-window inference).
    """
    if resize == "square":
        return v2.Compose([v2.Resize(size2(image_size), antialias=True), to_normalized()])
    if resize == "short_side":
        return v2.Compose([
            v2.Resize(min(size2(image_size)), antialias=True),
            to_normalized(),
            PadToMultiple(multiple, fill=0.0),  # 0 after normalisation = the mean colour
        ])
    raise ValueError(f"data.eval_resize must be 'square' or 'short_side', got {resize!r}")


# ------------------------------------------------------------------------------------------
# Swedish Traffic Signs (image + sign box)
# ------------------------------------------------------------------------------------------


def traffic_signs_transform(
    train: bool,
    image_size: int | Sequence[int] | None = None,
    pad_multiple: int = 14,
    color_jitter: float = 0.1,
    translate_px: float = 100.0,
    native_size: tuple[int, int] = (960, 1280),
) -> v2.Compose:
    """IPS/ATS-pytorch recipe on ``{"image": Image uint8, "box": BoundingBoxes}``.

    ``image_size=None`` keeps the native resolution and pads bottom/right to a multiple of
    ``pad_multiple`` (960x1280 -> 966x1288); otherwise the image is resized (bicubic) to it.
    Train adds ColorJitter(0.1, 0.1, 0.1, 0.1) and a translation of up to ``translate_px`` pixels
    of the native frame (v2's translate is (fraction of width, fraction of height)).
    """
    ops: list[Any] = []
    if image_size is not None:
        ops.append(v2.Resize(size2(image_size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True))
    if train:
        cj = color_jitter
        ops.append(v2.ColorJitter(cj, cj, cj, cj))
        nh, nw = native_size
        ops.append(v2.RandomAffine(degrees=0.0, translate=(translate_px / nw, translate_px / nh)))
    ops.append(to_normalized())
    if image_size is None and pad_multiple > 1:
        ops.append(PadToMultiple(pad_multiple, fill=0.0))  # 0 after normalisation = mean colour
    return v2.Compose(ops)


def ceil_to(x: int, m: int) -> int:
    """Smallest multiple of ``m`` >= ``x``."""
    return int(math.ceil(x / m) * m)
