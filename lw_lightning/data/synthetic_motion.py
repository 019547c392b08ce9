"""Synthetic sparse video task: a small object whose direction of motion is the class.

Each clip is a cluttered background (gradient + random shapes) seen through a panning camera
(the whole background drifts in a random direction), a few *distractor movers* (solid discs and
squares of the object's size, each moving its own random way) and the *target*: a small red ring
with a bar (the distractor sign of the synthetic signs) moving right, left, down or up. The target
covers ``object_fraction`` of the frame (1.5% by default), so most tubelets are irrelevant and the
answer needs both "where" (which mover is the target) and "what" (its motion over time): the
setting video LookWhere is built for.

Samples are rendered on the fly from ``(seed, split, index)``: no files, deterministic, identical
in every worker and on every rank. Each sample carries the target's box in every frame
(``track``, ``[T, 4]`` x0,y0,x1,y1 pixels) for the selection pictures and the selector's recall.

``python -m lw_lightning.data.synthetic_motion --write-kinetics DIR`` writes the same task as mp4
clips in the CVDF Kinetics layout (annotation CSVs + clip files), for the Kinetics loader.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..errors import ConfigError
from .base import BaseDataModule
from .synthetic_signs import render_sign

#: the class is the target's direction of motion in frame coordinates (x right, y down)
DIRECTIONS = {"moving right": (1.0, 0.0), "moving left": (-1.0, 0.0), "moving down": (0.0, 1.0), "moving up": (0.0, -1.0)}
CLASS_NAMES = list(DIRECTIONS)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 2}


def _paste(frame: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``sprite`` (h,w,4 uint8) into ``frame`` (H,W,3 float32) at top-left (x, y), clipped."""
    h, w = sprite.shape[:2]
    H, W = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x0 >= x1 or y0 >= y1:
        return
    part = sprite[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    alpha = part[..., 3:4] / 255.0
    frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - alpha) + part[..., :3] * alpha


def _solid_sprite(rng: np.random.Generator, diameter: int) -> np.ndarray:
    """A distractor mover: a solid disc or square in a random colour (never red-and-white)."""
    s = diameter * 4
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in rng.integers(0, 200, 3)) + (255,)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([0, 0, s - 1, s - 1], fill=colour)
    return np.asarray(img.resize((diameter, diameter), Image.Resampling.LANCZOS))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradient + 15-30 random rectangles, ellipses and lines, (h, w, 3) uint8."""
    c0, c1 = rng.integers(40, 216, size=(2, 3))
    horizontal = rng.random() < 0.5
    t = np.linspace(0.0, 1.0, w if horizontal else h, dtype=np.float32)
    grad = (c0[None, :] * (1 - t[:, None]) + c1[None, :] * t[:, None]).astype(np.uint8)
    arr = np.broadcast_to(grad[None] if horizontal else grad[:, None], (h, w, 3)).copy()
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    scale = math.sqrt(h * w)
    for _ in range(int(rng.integers(15, 31))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        ext = rng.uniform(0.03, 0.2) * scale
        x1, y1 = x0 + rng.uniform(-ext, ext), y0 + rng.uniform(-ext, ext)
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, max(2, int(scale * 0.015)))))
    return np.asarray(img)


def _track(rng: np.random.Generator, direction: tuple[float, float], size: int, d: int, frames: int, travel: float) -> np.ndarray:
    """Top-left positions (frames, 2) of a sprite of side ``d`` moving ``travel`` px along
    ``direction`` (turned by up to ±15°), kept inside the frame."""
    angle = math.atan2(direction[1], direction[0]) + rng.uniform(-math.pi / 12, math.pi / 12)
    vx, vy = math.cos(angle) * travel, math.sin(angle) * travel
    lo_x, hi_x = max(0.0, -vx), size - d - max(0.0, vx)
    lo_y, hi_y = max(0.0, -vy), size - d - max(0.0, vy)
    x0 = rng.uniform(lo_x, max(lo_x, hi_x))
    y0 = rng.uniform(lo_y, max(lo_y, hi_y))
    s = np.linspace(0.0, 1.0, frames)[:, None]
    return np.array([x0, y0]) + s * np.array([vx, vy])


def render_motion_clip(
    seed: int, split: str, index: int, num_frames: int, size: int, object_fraction: float = 0.015,
    distractors: tuple[int, int] = (2, 4), pan: float = 0.1, noise: float = 6.0,
) -> tuple[np.ndarray, int, np.ndarray]:
    """One clip: (``[T, size, size, 3]`` uint8 frames, label, ``[T, 4]`` target boxes x0,y0,x1,y1).

    ``pan``: the camera drifts up to this fraction of the frame over the clip; ``distractors``:
    inclusive range of distractor movers.
    """
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    d = max(4, int(round(math.sqrt(object_fraction * size * size * 4 / math.pi))))
    margin = int(math.ceil(pan * size)) + 1
    canvas = _background(rng, size + 2 * margin, size + 2 * margin)
    pan_angle = rng.uniform(0, 2 * math.pi)
    pan_len = rng.uniform(0, pan * size)
    pan_xy = np.linspace(0.0, 1.0, num_frames)[:, None] * np.array([math.cos(pan_angle), math.sin(pan_angle)]) * pan_len
    label = int(rng.integers(0, len(CLASS_NAMES)))
    target = render_sign(d, None)  # red ring, white disc, red bar
    target = np.asarray(target)
    target_track = _track(rng, DIRECTIONS[CLASS_NAMES[label]], size, d, num_frames, rng.uniform(0.3, 0.5) * size)
    movers = []
    for _ in range(int(rng.integers(distractors[0], distractors[1] + 1))):
        dd = max(4, int(round(d * rng.uniform(0.8, 1.3))))
        heading = rng.uniform(0, 2 * math.pi)
        movers.append((_solid_sprite(rng, dd), _track(rng, (math.cos(heading), math.sin(heading)), size, dd, num_frames,
                                                      rng.uniform(0.1, 0.5) * size)))
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        ox, oy = (int(round(v)) for v in margin + pan_xy[t])
        frame = canvas[oy : oy + size, ox : ox + size].astype(np.float32)
        for sprite, track in movers:
            _paste(frame, sprite, int(round(track[t, 0])), int(round(track[t, 1])))
        x, y = (int(round(v)) for v in target_track[t])
        _paste(frame, target, x, y)
        frame += rng.normal(0.0, noise, size=frame.shape).astype(np.float32)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    xy = np.round(target_track)
    boxes = np.concatenate([xy, xy + d], axis=1).astype(np.float32)
    return frames, label, boxes


def track_tubelets(track: torch.Tensor, tubelet: tuple[int, int, int] | list[int], grid: tuple[int, int, int]) -> torch.Tensor:
    """(B, nt·nh·nw) bool, (t, h, w) order: the tubelets the target overlaps in the central frame
    of their temporal slice, from its boxes ``track`` (B, T, 4) x0,y0,x1,y1 in pixels."""
    t, h, w = (int(v) for v in tubelet)
    nt, nh, nw = grid
    boxes = track[:, t // 2 :: t][:, :nt].float()  # (B, nt, 4)
    rows = torch.arange(nh, device=track.device, dtype=torch.float32)
    cols = torch.arange(nw, device=track.device, dtype=torch.float32)
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # (B, nt, 1)
    in_rows = (rows * h < y1) & ((rows + 1) * h > y0)  # (B, nt, nh)
    in_cols = (cols * w < x1) & ((cols + 1) * w > x0)  # (B, nt, nw)
    return (in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)).flatten(1)


def track_recall(selected: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: (recall, hit): the fraction of the target's tubelets (``target``, from
    :func:`track_tubelets`) among the ``selected`` (B, k) indices, and whether any is selected."""
    chosen = torch.zeros_like(target).scatter(1, selected, True)
    both = (chosen & target).sum(1).float()
    return both / target.sum(1).clamp(min=1).float(), both > 0


class SyntheticMotion(Dataset):
    """Deterministic synthetic motion clips (see the module docstring); ``video`` is ``[3, T, H, W]``
    normalised with ``mean``/``std``."""

    def __init__(
        self, num_samples: int, num_frames: int, img_size: int, split: str = "train", seed: int = 0,
        object_fraction: float = 0.015, distractors: tuple[int, int] = (2, 4), pan: float = 0.1,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5), std: tuple[float, ...] = (0.5, 0.5, 0.5), cache: bool = False,
    ) -> None:
        self.num_samples, self.num_frames, self.img_size = num_samples, num_frames, img_size
        self.split, self.seed = split, seed
        self.object_fraction, self.distractors, self.pan = object_fraction, distractors, pan
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
        self.cache: dict[int, tuple] | None = {} if cache else None  # uint8 clips per process

    def __len__(self) -> int:
        return self.num_samples

    def source(self, index: int) -> str:
        """A stable id of the sample: ``<split>/<index>`` (rendered from the seed, no file)."""
        return f"{self.split}/{index}"

    def clip(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """The raw uint8 clip, its label and target boxes."""
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        out = render_motion_clip(self.seed, self.split, index, self.num_frames, self.img_size, self.object_fraction, self.distractors, self.pan)
        if self.cache is not None:
            self.cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames, label, boxes = self.clip(index)
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0  # [C, T, H, W]
        return {
            "video": (video - self.mean) / self.std,
            "label": torch.tensor(label),
            "index": torch.tensor(index),
            "track": torch.from_numpy(boxes),
        }


class SyntheticMotionDataModule(BaseDataModule):
    """The synthetic motion task: 4 classes (the target's direction), one view per clip.

    Args:
        num_frames / img_size: clip shape (the issue's task is 32 × 224²; CPU recipes use less).
        num_train / num_val / num_test: split sizes (the predict split is the test split).
        object_fraction: target area / frame area.
        distractors: [lo, hi] distractor movers per clip.
        pan: camera drift over the clip, as a fraction of the frame.
        mean / std: per-channel normalisation on [0, 1] (0.5 / 0.5: ViViT's [-1, 1], as Kinetics).
        cache: keep rendered clips (uint8) in memory per worker process.
    """

    def __init__(
        self,
        num_frames: int = 32,
        img_size: int = 224,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 400,
        object_fraction: float = 0.015,
        distractors: list[int] | tuple[int, int] = (2, 4),
        pan: float = 0.1,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        cache: bool = False,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        if num_frames < 2 or img_size < 8:
            raise ConfigError(f"data.num_frames={num_frames} / data.img_size={img_size}: need at least 2 frames of 8x8 px")
        if not 0.0 < object_fraction < 0.25:
            raise ConfigError(f"data.object_fraction={object_fraction}: the target's share of the frame must lie in (0, 0.25)")
        if len(distractors) != 2 or not 0 <= int(distractors[0]) <= int(distractors[1]):
            raise ConfigError(f"data.distractors={list(distractors)}: expected [lo, hi] with 0 <= lo <= hi")
        self.num_frames, self.img_size = num_frames, img_size
        self.sizes = {"train": num_train, "val": num_val, "test": num_test, "predict": num_test}
        self.object_fraction, self.distractors, self.pan = object_fraction, (int(distractors[0]), int(distractors[1])), pan
        self.mean, self.std = tuple(mean or (0.5,) * 3), tuple(std or (0.5,) * 3)
        self.cache = cache
        self.class_names = list(CLASS_NAMES)
        self.num_classes = len(CLASS_NAMES)

    def build_dataset(self, split: str) -> Dataset:
        return SyntheticMotion(self.sizes[split], self.num_frames, self.img_size, split, self.seed, self.object_fraction,
                               self.distractors, self.pan, self.mean, self.std, self.cache)


def write_kinetics_layout(root: str | Path, sizes: dict[str, int], num_frames: int, img_size: int, seed: int = 0, fps: int = 12,
                          object_fraction: float = 0.015) -> dict[str, int]:
    """Write the task as H.264 clips in the CVDF Kinetics layout (``annotations/<split>.csv`` and
    ``<split>/<id>_<start>_<end>.mp4``); returns clips per split."""
    from .synthetic_kinetics import write_video, youtube_id

    root = Path(root)
    if (root / "annotations").exists():
        raise FileExistsError(f"{root}/annotations already exists; choose an empty directory")
    (root / "annotations").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    for split, count in sizes.items():
        (root / split).mkdir(exist_ok=True)
        with open(root / "annotations" / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
            for i in range(count):
                frames, label, _ = render_motion_clip(seed, split, i, num_frames, img_size, object_fraction)
                vid = youtube_id(rng)
                while vid in used:
                    vid = youtube_id(rng)
                used.add(vid)
                start = int(rng.integers(0, 300))
                write_video(root / split / f"{vid}_{start:06d}_{start + 10:06d}.mp4", frames, fps)
                writer.writerow([CLASS_NAMES[label], vid, start, start + 10, split, 0])
    return dict(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lw_lightning.data.synthetic_motion", description=__doc__.split("\n")[0])
    parser.add_argument("--write-kinetics", metavar="DIR", required=True, help="write the task as mp4 clips in the Kinetics layout")
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--train", type=int, default=200, help="training clips")
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        counts = write_kinetics_layout(args.write_kinetics, {"train": args.train, "val": args.val, "test": args.test},
                                       args.num_frames, args.img_size, args.seed)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {counts} clips ({len(CLASS_NAMES)} classes) to {args.write_kinetics}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
