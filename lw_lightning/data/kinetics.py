"""Kinetics-400/600/700 (and any video set in the same layouts) read with decord (PyAV for
rotated videos and for files decord fails on, see ``video_io.py``).

Accepted on-disk layouts (``layout="auto"`` picks the first that matches under ``root``):

* ``csv`` — DeepMind/CVDF annotations ``annotations/{train,val|validate,test}.csv`` with header
  ``label,youtube_id,time_start,time_end,split[,is_cc]``; clips named
  ``{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,webm,mkv,avi}`` found anywhere below ``root``
  (flat per split as CVDF, or in label folders as the ActivityNet crawler / mmaction2); files in a
  ``replacement`` folder win over same-named ones elsewhere.
* ``folders`` — ``{train,val|validate,test}/<label>/*.mp4``; folder names are matched to labels with
  spaces/underscores/punctuation ignored (``air_drumming`` = ``air drumming``).
* ``list`` — ``{train,val,test}.txt`` (or ``*_list.txt``): one ``<path> <int label>`` per line,
  paths relative to ``root`` (mmaction2 / pytorchvideo / PySlowFast style; the last whitespace
  separates the label, so paths may hold spaces).

Class index: position in ``label_map`` (one name per line) when given, else in the sorted set of
training labels. Missing files are dropped at setup with a logged count. A video that fails to
decode (with decord and then PyAV) is, in training, replaced by a seeded random other video (at most ``max_resample`` times;
each replacement is counted in the batch as ``resampled`` and logged); in validation/test it is
returned with ``valid=False`` and zero frames, and the module counts and excludes it.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError
from .base import BaseDataModule
from .sampling import sample_test_clips, sample_train_clip
from .video_augment import VideoAugment
from .video_io import VideoReadError, probe, read_clip_frames

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi")
FILENAME_RE = re.compile(r"^(.{11})_(\d{6})_(\d{6})\.(mp4|webm|mkv|avi)$")
#: accepted directory / file stems per split (K700 CSVs say "validate")
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validate"), "test": ("test",)}
LAYOUTS = ("csv", "folders", "list")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated clip: file, class index (-1 when unlabelled) and a readable id."""

    path: str
    label: int
    name: str


def normalize_label(name: str) -> str:
    """Key used to match label spellings across tools: lowercase alphanumerics only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def clip_key(youtube_id: str, start: int, end: int) -> tuple[str, int, int]:
    return (youtube_id, int(start), int(end))


def parse_clip_filename(name: str) -> tuple[str, int, int] | None:
    """``abc-_12345x_000010_000020.mp4`` -> ``("abc-_12345x", 10, 20)``; the 11-char id may hold ``_``."""
    m = FILENAME_RE.match(name)
    return clip_key(m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def index_clip_files(root: Path) -> dict[tuple[str, int, int], Path]:
    """Every Kinetics-named video below ``root``; ``replacement`` folders take precedence."""
    found: dict[tuple[str, int, int], Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        is_replacement = "replacement" in Path(dirpath).relative_to(root).as_posix()
        for fn in sorted(filenames):
            key = parse_clip_filename(fn)
            if key is None:
                continue
            if key not in found or is_replacement:
                found[key] = Path(dirpath) / fn
    return found


def read_annotation_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a Kinetics CSV (header-driven; ``label`` may be absent, as in the K400 test CSV)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("youtube_id", "time_start", "time_end") if c not in fields]
        if missing:
            raise ConfigError(f"{path}: not a Kinetics annotation CSV (missing columns {missing}; header is {fields})")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def read_list_file(path: Path) -> list[tuple[str, int]]:
    """``<path> <int label>`` lines (a line with only a path gets label -1)."""
    items = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
                items.append((parts[0], int(parts[1])))
            elif len(parts) == 2 and Path(parts[0]).suffix.lower() not in VIDEO_EXTS:
                raise ConfigError(f"{path}:{n}: expected '<path> <int label>', got {line!r}")
            else:
                items.append((line, -1))
    return items


def read_label_map(path: Path) -> list[str]:
    """One class name per line (index = line number); blank lines ignored."""
    names = [ln.strip().strip('"') for ln in path.read_text().splitlines() if ln.strip()]
    if len(set(map(normalize_label, names))) != len(names):
        raise ConfigError(f"label map {path} repeats a class name")
    return names


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


class KineticsDataset(Dataset):
    """Decodes clips of ``records`` on demand (see module docstring for the corrupt-video policy).

    Train samples: ``video`` uint8 ``[T, H, W, 3]``, ``aug`` (the clip's flip/colour parameters,
    :meth:`VideoAugment.draw`), ``label``, ``index``, ``resampled`` (corrupt videos skipped for
    this sample). Eval samples: ``video`` uint8 ``[V, T, H, W, 3]`` with V = clips × crops,
    ``label``, ``index``, ``valid``. The DataModule's ``on_after_batch_transfer`` turns them into
    normalised float ``[B, C, T, H, W]`` / ``[B, V, C, T, H, W]`` on the device.
    """

    def __init__(
        self, records: list[VideoRecord], train: bool, transform: ClipTransform, num_frames: int, frame_stride: int,
        num_clips: int = 1, num_crops: int = 1, out_of_bounds: str = "loop", max_resample: int = 10,
        root: str | Path | None = None, augment: VideoAugment | None = None,
    ) -> None:
        self.records = records
        self.root = Path(root) if root is not None else None  # source() names files relative to it
        self.train = train
        self.transform = transform
        self.augment = augment or VideoAugment()
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.out_of_bounds = out_of_bounds
        self.max_resample = max_resample

    def __len__(self) -> int:
        return len(self.records)

    def source(self, index: int) -> str:
        """The clip's video file, relative to the data root when below it (its name is the clip id)."""
        path = Path(self.records[index].path)
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:  # a list file may point outside the root
                pass
        return str(path)

    def decode(self, path: str, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
        """Frames chosen by ``choose(num_frames)`` at decoder size ``size`` (the benchmark swaps the decoder)."""
        return read_clip_frames(path, choose, size)

    def train_indices(self, index: int, total: int) -> np.ndarray:
        """Frame indices of a training clip of sample ``index`` from a video of ``total`` frames."""
        return sample_train_clip(total, self.num_frames, self.frame_stride, out_of_bounds=self.out_of_bounds)

    def train_clip(self, index: int) -> Tensor:
        """Decode and cut one training clip of sample ``index``: uint8 ``[T, s, s, 3]``."""
        path = self.records[index].path
        info = probe(path)
        plan = self.transform.train_plan(info.height, info.width) if info.height > 0 else None
        frames = self.decode(path, lambda n: self.train_indices(index, n), plan.decode_size if plan else None)
        if plan is None or plan.frame != tuple(frames.shape[1:3]):  # size unknown or not as probed
            plan = self.transform.train_plan(*frames.shape[1:3])
        return self.transform.apply(frames, plan)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._train_item(index) if self.train else self._eval_item(index)

    def _train_item(self, index: int) -> dict[str, Tensor]:
        current = index
        for attempt in range(self.max_resample + 1):
            try:
                video = self.train_clip(current)
            except VideoReadError as err:
                # seeded through the worker's torch RNG (set by the loader's seed): reproducible
                nxt = int(torch.randint(len(self.records), (1,)))
                log.warning("corrupt training video replaced (%d/%d): %s", attempt + 1, self.max_resample, err)
                current = nxt
                continue
            return {
                "video": video,
                "aug": self.augment.draw(1)[0],
                "label": torch.tensor(self.records[current].label),
                "index": torch.tensor(current),
                "resampled": torch.tensor(attempt),
            }
        raise VideoReadError(f"{self.max_resample + 1} videos in a row failed to decode, starting from {self.records[index].path}")

    def _eval_item(self, index: int) -> dict[str, Tensor]:
        rec = self.records[index]
        s, views = self.transform.img_size, self.num_clips * self.num_crops
        try:
            info = probe(rec.path)
            clips = self.decode(
                rec.path, lambda n: sample_test_clips(n, self.num_frames, self.frame_stride, self.num_clips, self.out_of_bounds),
                self.transform.eval_decode_size(info.height, info.width),
            )
            video, valid = self.transform.eval(clips, self.num_crops), True
        except VideoReadError as err:
            log.warning("corrupt evaluation video (counted, excluded from accuracy): %s", err)
            video, valid = torch.zeros(views, self.num_frames, s, s, 3, dtype=torch.uint8), False
        return {"video": video, "label": torch.tensor(rec.label), "index": torch.tensor(index), "valid": torch.tensor(valid)}


# ------------------------------------------------------------------------------------------------
# DataModule
# ------------------------------------------------------------------------------------------------


class KineticsDataModule(BaseDataModule):
    """Kinetics in any of the layouts of the module docstring, decoded with decord.

    Args:
        root: dataset folder.
        layout: ``auto``, ``csv``, ``folders`` or ``list``.
        annotations: split -> annotation file (CSV or list), relative to ``root``; defaults per layout.
        label_map: file with one class name per line fixing the class order (else sorted train labels).
        num_frames / frame_stride: clip length and stride (e.g. 32 × 2).
        img_size: crop side. train_short_side: [lo, hi] short-side jitter range (scale_jitter crop).
        eval_short_side: short side before eval crops (default ``img_size·256/224``).
        train_crop: ``scale_jitter`` or ``random_resized``.
        color_jitter: [brightness, contrast, saturation, hue] (``v2.ColorJitter``), applied to a whole
            clip with probability ``color_jitter_prob``; ``grayscale_prob``: colour drop per clip.
        mean / std: per-channel normalisation on [0, 1] (0.5/0.5 = ViViT's [-1, 1] zero-centering).
        decoder_resize_ratio: a source this many times (or more) larger than a clip needs is
            scaled by the decoder (null: never; see :class:`ClipTransform`).
        val_clips × val_crops, test_clips × test_crops: evaluation views per video.
        test_split: annotation split evaluated by ``test`` (``val`` when test labels are withheld).
        out_of_bounds: ``loop`` or ``clamp`` frame indices of videos shorter than a clip.
        max_resample: corrupt training videos replaced in a row before giving up.
    """

    def __init__(
        self,
        root: str,
        layout: Literal["auto", "csv", "folders", "list"] = "auto",
        annotations: dict[str, str] | None = None,
        label_map: str | None = None,
        num_frames: int = 32,
        frame_stride: int = 2,
        img_size: int = 224,
        train_short_side: list[int] | None = None,
        eval_short_side: int | None = None,
        train_crop: Literal["scale_jitter", "random_resized"] = "scale_jitter",
        flip: bool = True,
        color_jitter: list[float] | None = None,
        color_jitter_prob: float = 0.0,
        grayscale_prob: float = 0.0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        val_clips: int = 1,
        val_crops: int = 1,
        test_clips: int = 4,
        test_crops: int = 3,
        test_split: Literal["train", "val", "test"] = "test",
        out_of_bounds: Literal["loop", "clamp"] = "loop",
        max_resample: int = 10,
        decoder_resize_ratio: float | None = 1.5,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        self.root = Path(root).expanduser()
        self.layout_arg = layout
        self.annotations = dict(annotations or {})
        self.label_map = label_map
        self.num_frames, self.frame_stride, self.img_size = num_frames, frame_stride, img_size
        self.views = {"val": (val_clips, val_crops), "test": (test_clips, test_crops), "predict": (test_clips, test_crops)}
        self.test_split = test_split
        self.out_of_bounds = out_of_bounds
        self.max_resample = max_resample
        eval_short = eval_short_side or round(img_size * 256 / 224)
        jitter = train_short_side or [eval_short, round(eval_short * 1.25)]
        if min(jitter) < img_size or eval_short < img_size:
            raise ConfigError(f"data.train_short_side {jitter} / eval_short_side {eval_short} must be >= img_size {img_size}")
        try:
            self.transform = ClipTransform(img_size, jitter, eval_short, train_crop, decoder_resize_ratio=decoder_resize_ratio)
            self.augment = VideoAugment(
                flip, color_jitter or (0.4, 0.4, 0.4, 0.1), color_jitter_prob, grayscale_prob, mean or [0.5] * 3, std or [0.5] * 3,
            )
        except ValueError as err:
            raise ConfigError(f"data.{err}") from None
        self._layout: str | None = None
        self._classes: list[str] | None = None
        self._clip_index: dict[tuple[str, int, int], Path] | None = None

    # -- layout discovery -------------------------------------------------------------------------
    def _split_path(self, split: str, suffixes: Sequence[str], parent: Path | None = None) -> Path | None:
        parent = parent or self.root
        for stem in SPLIT_ALIASES[split]:
            for suffix in suffixes:
                if (parent / f"{stem}{suffix}").exists():
                    return parent / f"{stem}{suffix}"
        return None

    def _annotation_file(self, split: str) -> Path | None:
        if split in self.annotations:
            path = self.root / self.annotations[split]
            if not path.is_file():
                raise ConfigError(f"data.annotations.{split}: file not found: {path}")
            return path
        if self.layout == "csv":
            return self._split_path(split, [".csv"], self.root / "annotations")
        if self.layout == "list":
            return self._split_path(split, [".txt", "_list.txt", "_list_videos.txt"])
        return None

    @property
    def layout(self) -> str:
        if self._layout is None:
            self._layout = self._detect_layout()
        return self._layout

    def _detect_layout(self) -> str:
        if not self.root.is_dir():
            raise ConfigError(f"data.root {self.root} does not exist (expected a Kinetics folder; see docs/video.md)")
        if self.layout_arg != "auto":
            return self.layout_arg
        if "train" in self.annotations:
            return "csv" if self.annotations["train"].endswith(".csv") else "list"
        if self._split_path("train", [".csv"], self.root / "annotations"):
            return "csv"
        train_dir = self._split_path("train", [""])
        if train_dir and train_dir.is_dir() and any(p.is_dir() for p in train_dir.iterdir()):
            return "folders"
        if self._split_path("train", [".txt", "_list.txt", "_list_videos.txt"]):
            return "list"
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in self.root.iterdir())[:8]
        raise ConfigError(
            f"no Kinetics layout under {self.root}: expected annotations/train.csv (+ clips named "
            f"<youtube_id>_<start>_<end>.mp4), train/<label>/*.mp4, or train.txt with '<path> <label>' lines; "
            f"found {found or 'an empty folder'}"
        )

    # -- classes ----------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        if self._classes is None:
            self._classes = self._resolve_classes()
        return self._classes

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.class_names)

    def _resolve_classes(self) -> list[str]:
        if self.label_map:
            path = self.root / self.label_map
            if not path.is_file():
                raise ConfigError(f"data.label_map: file not found: {path}")
            return read_label_map(path)
        if self.layout == "csv":
            ann = self._annotation_file("train")
            if ann is None:
                raise ConfigError(f"no training annotations under {self.root}/annotations (train.csv)")
            labels = {r["label"] for r in read_annotation_csv(ann) if r.get("label")}
            if not labels:
                raise ConfigError(f"{ann} has no labels")
            return sorted(labels)
        if self.layout == "folders":
            train_dir = self._split_path("train", [""])
            if train_dir is None:
                raise ConfigError(f"no train/ folder under {self.root}")
            return sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        ann = self._annotation_file("train")
        if ann is None:
            raise ConfigError(f"no training list file under {self.root} (train.txt with '<path> <label>' lines)")
        top = max((label for _, label in read_list_file(ann)), default=-1)
        if top < 0:
            raise ConfigError(f"{ann} has no labels")
        return [str(i) for i in range(top + 1)]

    def _class_index(self, name: str, where: str) -> int:
        lookup = {normalize_label(n): i for i, n in enumerate(self.class_names)}
        key = normalize_label(name)
        if key not in lookup:
            raise ConfigError(f"{where}: label {name!r} is not one of the {len(lookup)} training classes")
        return lookup[key]

    # -- records ----------------------------------------------------------------------------------
    def records(self, split: str) -> list[VideoRecord]:
        """Annotated clips of ``split`` whose files exist (missing ones logged and dropped)."""
        split = "test" if split == "predict" else split
        src = self.test_split if split == "test" else split
        if self.layout == "csv":
            items, where = self._csv_records(src)
        elif self.layout == "folders":
            items, where = self._folder_records(src)
        else:
            items, where = self._list_records(src)
        present = [r for r in items if os.path.isfile(r.path)]
        dropped = len(items) - len(present)
        if dropped:
            log.warning("kinetics %s: %d of %d annotated clips have no video file; dropped", src, dropped, len(items))
        if not present:
            raise ConfigError(f"kinetics {src}: none of the {len(items)} clips of {where} were found under {self.root}")
        return present

    def _csv_records(self, split: str) -> tuple[list[VideoRecord], str]:
        ann = self._annotation_file(split)
        if ann is None:
            raise ConfigError(f"no {split} annotations: expected {self.root}/annotations/{'|'.join(SPLIT_ALIASES[split])}.csv")
        if self._clip_index is None:
            self._clip_index = index_clip_files(self.root)
        items = []
        for n, row in enumerate(read_annotation_csv(ann), 2):
            try:
                key = clip_key(row["youtube_id"], int(float(row["time_start"])), int(float(row["time_end"])))
            except ValueError:
                raise ConfigError(f"{ann}:{n}: bad time_start/time_end {row['time_start']!r}, {row['time_end']!r}") from None
            label = self._class_index(row["label"], f"{ann}:{n}") if row.get("label") else -1
            path = self._clip_index.get(key)
            name = f"{key[0]}_{key[1]:06d}_{key[2]:06d}"
            items.append(VideoRecord(str(path) if path else str(self.root / "<missing>" / name), label, name))
        return items, str(ann)

    def _folder_records(self, split: str) -> tuple[list[VideoRecord], str]:
        split_dir = self._split_path(split, [""])
        if split_dir is None:
            raise ConfigError(f"no {split} folder under {self.root} (expected {'|'.join(SPLIT_ALIASES[split])}/<label>/*.mp4)")
        items = []
        for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = self._class_index(label_dir.name, str(label_dir))
            for f in sorted(label_dir.iterdir()):
                if f.suffix.lower() in VIDEO_EXTS:
                    items.append(VideoRecord(str(f), label, f.stem))
        return items, str(split_dir)

    def _list_records(self, split: str) -> tuple[list[VideoRecord], str]:
        ann = self._annotation_file(split)
        if ann is None:
            raise ConfigError(f"no {split} list file under {self.root} (expected {split}.txt with '<path> <label>' lines)")
        items = []
        for rel, label in read_list_file(ann):
            if label >= self.num_classes:
                raise ConfigError(f"{ann}: label {label} >= {self.num_classes} classes")
            items.append(VideoRecord(str(self.root / rel), label, Path(rel).stem))
        return items, str(ann)

    def build_dataset(self, split: str) -> Dataset:
        records = self.records(split)
        common = dict(
            transform=self.transform, num_frames=self.num_frames, frame_stride=self.frame_stride,
            out_of_bounds=self.out_of_bounds, root=self.root, augment=self.augment,
        )
        if split == "train":
            return KineticsDataset(records, True, max_resample=self.max_resample, **common)  # type: ignore[arg-type]
        if split == "test" and any(r.label < 0 for r in records):
            raise ConfigError(f"kinetics {self.test_split} annotations carry no labels; evaluate with data.test_split=val")
        clips, crops = self.views[split]
        return KineticsDataset(records, False, num_clips=clips, num_crops=crops, **common)  # type: ignore[arg-type]

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """uint8 clips from the workers -> flipped / colour-jittered / normalised float clips, batched on the device."""
        return self.augment.batch(batch)
