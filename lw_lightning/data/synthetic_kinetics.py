"""Synthetic Kinetics: mp4 clips and annotation CSVs in the exact CVDF Kinetics layout.

::

    DIR/annotations/{train,val,test}.csv   label,youtube_id,time_start,time_end,split,is_cc
    DIR/{train,val,test}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4

Each clip shows one shape (circle or square) of random colour and size moving across a noisy
background in one direction (left or right) at a random speed; the class is shape × direction, so
telling classes apart needs both appearance and motion. Labels carry spaces, commas and
parentheses and YouTube ids contain ``-`` and ``_``, as real ones do, so the reader is exercised.

Run ``python -m lw_lightning.data.synthetic_kinetics --make-tiny DIR`` for the demo's dataset.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square")
DIRECTIONS = ("left", "right")
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SPLITS = ("train", "val", "test")


def class_name(shape: str, direction: str) -> str:
    """Kinetics-style names with punctuation, e.g. ``circle, moving left`` / ``square (moving right)``."""
    return f"{shape}, moving {direction}" if shape == "circle" else f"{shape} (moving {direction})"


CLASS_NAMES = sorted(class_name(s, d) for s in SHAPES for d in DIRECTIONS)


def render_clip(rng: np.random.Generator, shape: str, direction: str, num_frames: int, size: int) -> np.ndarray:
    """``[T, size, size, 3]`` uint8 frames of one moving shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = rng.uniform(0.12, 0.2) * size
    speed = rng.uniform(0.7, 1.0) * (size - 2 * radius) / max(1, num_frames - 1)  # stays in frame
    travel = speed * (num_frames - 1)
    x0 = rng.uniform(radius, size - radius - travel)
    y = rng.uniform(radius, size - radius)
    sign = 1.0 if direction == "right" else -1.0
    if sign < 0:
        x0 = size - x0
    background = rng.integers(0, 90, size=3)
    colour = rng.integers(150, 256, size=3)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        cx = x0 + sign * speed * t
        if shape == "circle":
            mask = (xx - cx) ** 2 + (yy - y) ** 2 <= radius**2
        else:
            mask = (np.abs(xx - cx) <= radius * 0.85) & (np.abs(yy - y) <= radius * 0.85)
        img = np.broadcast_to(background, (size, size, 3)).astype(np.int16) + rng.normal(0, 8, (size, size, 3)).astype(np.int16)
        img[mask] = colour
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write_video(
    path: str | Path, frames: np.ndarray, fps: int = 12, lossless: bool = False, rotation: int = 0,
    tags: dict[str, str] | None = None,
) -> None:
    """Write ``[T, H, W, 3]`` uint8 RGB frames as H.264 with PyAV (container from the suffix: mp4, mkv, ...).

    ``lossless`` uses ``libx264rgb`` at crf 0 (decodes bit-exactly: for tests); otherwise
    ``libx264``/yuv420p, the format real Kinetics clips come in. ``rotation`` (degrees
    counter-clockwise) stores a display matrix as phones do: players show the frames turned by it.
    ``tags`` are stream metadata (e.g. an old-style ``rotate`` tag).
    """
    import av

    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"crf": "0"} if lossless else {"crf": "18"}
        if rotation:
            stream.set_display_rotation(rotation)
        for key, value in (tags or {}).items():
            stream.metadata[key] = value
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character id over YouTube's alphabet (``-`` and ``_`` included)."""
    return "".join(_ID_CHARS[i] for i in rng.integers(0, len(_ID_CHARS), 11))


@dataclass
class SyntheticKineticsSpec:
    """Size of a generated dataset (videos per class and split)."""

    train_per_class: int = 80
    val_per_class: int = 10
    test_per_class: int = 10
    size: int = 32
    num_frames: int = 16
    fps: int = 8
    lossless: bool = False
    seed: int = 0


def make_synthetic_kinetics(root: str | Path, spec: SyntheticKineticsSpec | None = None) -> dict[str, int]:
    """Write the dataset under ``root`` (must not already hold annotations); returns clips per split."""
    spec = spec or SyntheticKineticsSpec()
    root = Path(root)
    if (root / "annotations").exists():
        raise FileExistsError(f"{root}/annotations already exists; choose an empty directory")
    rng = np.random.default_rng(spec.seed)
    (root / "annotations").mkdir(parents=True)
    counts = {}
    used: set[str] = set()
    for split, per_class in zip(SPLITS, (spec.train_per_class, spec.val_per_class, spec.test_per_class)):
        (root / split).mkdir(exist_ok=True)
        rows = []
        for shape in SHAPES:
            for direction in DIRECTIONS:
                for _ in range(per_class):
                    vid = youtube_id(rng)
                    while vid in used:
                        vid = youtube_id(rng)
                    used.add(vid)
                    start = int(rng.integers(0, 300))
                    end = start + 10
                    frames = render_clip(rng, shape, direction, spec.num_frames, spec.size)
                    write_video(root / split / f"{vid}_{start:06d}_{end:06d}.mp4", frames, spec.fps, spec.lossless)
                    rows.append((class_name(shape, direction), vid, start, end, split, int(rng.integers(0, 2))))
        order = rng.permutation(len(rows))
        with open(root / "annotations" / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
            for i in order:
                writer.writerow(rows[i])
        counts[split] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lw_lightning.data.synthetic_kinetics", description=__doc__.split("\n")[0])
    parser.add_argument("--make-tiny", metavar="DIR", required=True, help="write the demo-sized dataset into DIR")
    parser.add_argument("--train-per-class", type=int, default=SyntheticKineticsSpec.train_per_class)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lossless", action="store_true", help="libx264rgb crf 0 instead of yuv420p")
    args = parser.parse_args(argv)
    spec = SyntheticKineticsSpec(train_per_class=args.train_per_class, seed=args.seed, lossless=args.lossless)
    try:
        counts = make_synthetic_kinetics(args.make_tiny, spec)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {counts} clips ({len(CLASS_NAMES)} classes) to {args.make_tiny}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
