"""Embedded default data: synthetic sparse recognition, a miniature of Swedish Traffic Signs.

Each image is cluttered background (gradient, random shapes, noise, and sometimes a *distractor*
sign: a red ring with a bar instead of digits) containing at most one speed sign: a white disk
with a red ring holding 50, 70 or 80 drawn in seven-segment strokes. With no sign the label is
EMPTY. The sign covers about ``sign_fraction`` of the image (1% by default), so most patches
are irrelevant: the setting LookWhere is built for.

Samples are generated on the fly from ``(seed, split, index)``: no files, fully deterministic,
identical in every worker and on every rank.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .base import BaseDataModule

CLASS_NAMES = ["EMPTY", "50_SIGN", "70_SIGN", "80_SIGN"]
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 2}

# seven-segment layout: segment -> (x0, y0, x1, y1) in a unit digit box (w=1, h=2)
_SEGMENTS = {
    "a": (0, 0, 1, 0), "b": (1, 0, 1, 1), "c": (1, 1, 1, 2), "d": (0, 2, 1, 2),
    "e": (0, 1, 0, 2), "f": (0, 0, 0, 1), "g": (0, 1, 1, 1),
}
_DIGITS = {"0": "abcdef", "5": "afgcd", "7": "abc", "8": "abcdefg"}


def _draw_digit(draw: ImageDraw.ImageDraw, digit: str, x: float, y: float, w: float, stroke: int) -> None:
    for seg in _DIGITS[digit]:
        x0, y0, x1, y1 = _SEGMENTS[seg]
        draw.line([(x + x0 * w, y + y0 * w), (x + x1 * w, y + y1 * w)], fill=(10, 10, 10), width=stroke)


def render_sign(diameter: int, text: str | None, supersample: int = 4) -> Image.Image:
    """An RGBA speed sign (``text`` like "50") or a distractor (``text=None``: a bar)."""
    s = diameter * supersample
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse([0, 0, s - 1, s - 1], fill=(200, 20, 30, 255))
    ring = max(1, s // 8)
    d.ellipse([ring, ring, s - 1 - ring, s - 1 - ring], fill=(245, 245, 245, 255))
    stroke = max(1, int(s * 0.09))
    if text is None:
        d.rectangle([s * 0.22, s * 0.42, s * 0.78, s * 0.58], fill=(200, 20, 30, 255))
    else:
        w = s * 0.2
        gap = s * 0.08
        total = len(text) * w + (len(text) - 1) * gap
        x = (s - total) / 2
        y = (s - 2 * w) / 2
        for ch in text:
            _draw_digit(d, ch, x, y, w, stroke)
            x += w + gap
    return img.resize((diameter, diameter), Image.Resampling.LANCZOS)


def render_sample(
    seed: int, split: str, index: int, size: tuple[int, int], sign_fraction: float = 0.01,
    empty_prob: float = 0.25, distractor_prob: float = 0.5,
) -> tuple[Image.Image, int, tuple[float, float, float, float], np.ndarray]:
    """Return (RGB image, label, box x0,y0,x1,y1 or -1s, sign mask H×W bool) for one sample."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    h, w = size
    # background: a two-colour gradient
    c0, c1 = rng.integers(40, 216, size=(2, 3))
    t = np.linspace(0.0, 1.0, w if rng.random() < 0.5 else h, dtype=np.float32)
    grad = (c0[None, :] * (1 - t[:, None]) + c1[None, :] * t[:, None]).astype(np.uint8)
    arr = np.broadcast_to(grad[None] if grad.shape[0] == w else grad[:, None], (h, w, 3)).copy()
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    scale = math.sqrt(h * w)
    for _ in range(int(rng.integers(12, 24))):
        kind = rng.integers(0, 3)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        ext = rng.uniform(0.03, 0.25) * scale
        x1, y1 = x0 + rng.uniform(-ext, ext), y0 + rng.uniform(-ext, ext)
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, max(2, int(scale * 0.012)))))
    base_d = math.sqrt(sign_fraction * h * w * 4 / math.pi)

    def place(diameter: int) -> tuple[int, int]:
        return int(rng.integers(0, w - diameter + 1)), int(rng.integers(0, h - diameter + 1))

    if rng.random() < distractor_prob:
        dd = max(6, int(round(base_d * rng.uniform(0.85, 1.15))))
        img.paste(render_sign(dd, None), place(dd), render_sign(dd, None))
    label = 0 if rng.random() < empty_prob else int(rng.integers(1, 4))
    mask = np.zeros((h, w), dtype=bool)
    box_xyxy = (-1.0, -1.0, -1.0, -1.0)
    if label:
        dd = max(8, int(round(base_d * rng.uniform(0.85, 1.15))))
        sign = render_sign(dd, CLASS_NAMES[label][:2])
        x, y = place(dd)
        img.paste(sign, (x, y), sign)
        alpha = np.asarray(sign)[..., 3] > 127
        mask[y : y + dd, x : x + dd] = alpha
        box_xyxy = (float(x), float(y), float(x + dd), float(y + dd))
    noisy = np.asarray(img).astype(np.int16) + rng.normal(0, 6, size=(h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), label, box_xyxy, mask


class SyntheticSigns(Dataset):
    """Deterministic synthetic sparse-recognition samples (see module docstring)."""

    def __init__(
        self, num_samples: int, image_size: tuple[int, int], split: str = "train", seed: int = 0,
        sign_fraction: float = 0.01, segmentation: bool = False, distractor_prob: float = 0.5, cache: bool = False,
    ) -> None:
        self.num_samples = num_samples
        self.image_size = image_size
        self.split = split
        self.seed = seed
        self.sign_fraction = sign_fraction
        self.segmentation = segmentation
        self.distractor_prob = distractor_prob
        # rendered samples kept per process (uint8 PIL images: 150 KB each at 224 px)
        self.cache: dict[int, tuple] | None = {} if cache else None
        self.to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])

    def __len__(self) -> int:
        return self.num_samples

    def source(self, index: int) -> str:
        """A stable id of the sample: ``<split>/<index>`` (rendered from the seed, no file)."""
        return f"{self.split}/{index}"

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        if self.cache is not None and index in self.cache:
            img, label, box, mask = self.cache[index]
        else:
            img, label, box, mask = render_sample(
                self.seed, self.split, index, self.image_size, self.sign_fraction, distractor_prob=self.distractor_prob
            )
            if self.cache is not None:
                self.cache[index] = (img, label, box, mask)
        sample = {
            "image": self.to_tensor(img),
            "label": torch.tensor(label),
            "box": torch.tensor(box, dtype=torch.float32),
            "index": torch.tensor(index),
        }
        if self.segmentation:
            # background 0, sign pixels carry the sign's class (1..3)
            sample["mask"] = torch.from_numpy(mask.astype(np.int64) * label)
        return sample


class SyntheticSignsDataModule(BaseDataModule):
    """Synthetic sparse recognition: 4 classes (EMPTY/50/70/80), or sign segmentation.

    Args:
        image_size: side, or [H, W] (multiples of the model's patch size).
        num_train / num_val / num_test: split sizes (the predict split is the test split).
        sign_fraction: sign area / image area.
        distractor_prob: chance of a distractor sign (red ring, bar instead of digits) per image.
        cache: keep rendered samples in memory (per worker process) instead of re-rendering them
            every epoch; worth it for small images and many epochs.
        task: "classification" or "segmentation" (adds ``mask``: 0 background, 1..3 sign class).
        masks: with ``task: classification``, also give each sample its ``mask`` (the dense target
            of ``ImageClassifier.patch_loss_weight``).
    """

    def __init__(
        self,
        image_size: int | list[int] = 224,
        num_train: int = 2000,
        num_val: int = 300,
        num_test: int = 300,
        sign_fraction: float = 0.01,
        distractor_prob: float = 0.5,
        cache: bool = False,
        task: str = "classification",
        masks: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        if task not in ("classification", "segmentation"):
            raise ValueError(f"data.task must be 'classification' or 'segmentation', got {task!r}")
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        self.sizes = {"train": num_train, "val": num_val, "test": num_test, "predict": num_test}
        self.sign_fraction = sign_fraction
        self.distractor_prob = distractor_prob
        self.cache = cache
        self.task = task
        self.masks = masks
        self.class_names = list(CLASS_NAMES)
        self.num_classes = len(CLASS_NAMES)

    def build_dataset(self, split: str) -> Dataset:
        return SyntheticSigns(
            self.sizes[split], self.image_size, split, self.seed, self.sign_fraction, self.task == "segmentation" or self.masks,
            self.distractor_prob, self.cache,
        )
