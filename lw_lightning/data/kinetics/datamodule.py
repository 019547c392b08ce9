"""``KineticsDataModule``: the layouts, label matching and views of the package docstring, as a
LightningDataModule."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from torch import Tensor
from torch.utils.data import Dataset

from ...errors import ConfigError
from ..base import BaseDataModule
from ..missing import warn_missing
from ..video_augment import VideoAugment
from ..video_io import DECODERS, torchcodec_problem
from .clip_transform import ClipTransform
from .dataset import KineticsDataset
from .layout import (
    SPLIT_ALIASES,
    VIDEO_EXTS,
    VideoRecord,
    clip_key,
    index_clip_files,
    normalize_label,
    read_annotation_csv,
    read_label_map,
    read_list_file,
)

log = logging.getLogger(__name__)

#: splits whose every annotated clip must carry a label (test labels may be withheld, as in K400)
LABELLED_SPLITS = ("train", "val")


# ------------------------------------------------------------------------------------------------
# DataModule
# ------------------------------------------------------------------------------------------------


class KineticsDataModule(BaseDataModule):
    """Kinetics in any of the layouts of the module docstring, decoded with decord (or torchcodec).

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
            scaled by decord (null: never; see :class:`ClipTransform`).
        decoder: ``decord`` (default) or ``torchcodec`` (needs the system's FFmpeg libraries; faster
            on CPU, docs/video.md; it decodes at the stored size, its scaler being the slower one);
            PyAV remains the fallback of either.
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
        decoder: Literal["decord", "torchcodec"] = "decord",
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
        if decoder not in DECODERS:
            raise ConfigError(f"data.decoder must be one of {list(DECODERS)}, got {decoder!r}")
        problem = torchcodec_problem() if decoder == "torchcodec" else None
        if problem:  # here, not in a worker: the run stops before it starts, saying what to install
            raise ConfigError(f"data.decoder=torchcodec: {problem}; or use data.decoder=decord")
        self.decoder = decoder
        self._layout: str | None = None
        self._classes: list[str] | None = None
        self._clip_index: dict[tuple[str, int, int], Path] | None = None
        #: split -> annotated clips without a video file (set by :meth:`records`)
        self.missing: dict[str, int] = {}

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
            return "csv" if self.annotations["train"].lower().endswith(".csv") else "list"
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
            known = f"data.label_map {self.root / self.label_map}" if self.label_map else "the training labels"
            raise ConfigError(f"{where}: label {name!r} is not in {known} ({len(lookup)} classes)")
        return lookup[key]

    # -- records ----------------------------------------------------------------------------------
    def records(self, split: str) -> list[VideoRecord]:
        """Annotated clips of ``split`` whose files exist; the number of the others goes to
        ``self.missing[split]`` and one warning (``data/missing.py``)."""
        stage = split
        split = "test" if split == "predict" else split
        src = self.test_split if split == "test" else split
        if self.layout == "csv":
            items, where = self._csv_records(src)
        elif self.layout == "folders":
            items, where = self._folder_records(src)
        else:
            items, where = self._list_records(src)
        present = [r for r in items if os.path.isfile(r.path)]
        absent = [r.name for r in items if not os.path.isfile(r.path)]
        self.missing[stage] = len(absent)
        warn_missing(where, stage, absent, len(items), "videos")
        if not present:
            raise ConfigError(f"kinetics {src}: none of the {len(items)} clips of {where} were found under {self.root}")
        return present

    def _csv_records(self, split: str) -> tuple[list[VideoRecord], str]:
        ann = self._annotation_file(split)
        if ann is None:
            raise ConfigError(f"no {split} annotations: expected {self.root}/annotations/{'|'.join(SPLIT_ALIASES[split])}.csv")
        if self._clip_index is None:
            self._clip_index = index_clip_files(self.root)
        rows = read_annotation_csv(ann)
        labelled = split in LABELLED_SPLITS  # the test CSV of K400 withholds its labels
        if labelled and rows and "label" not in rows[0]:
            raise ConfigError(f"{ann} has no 'label' column (header: {', '.join(rows[0])})")
        items = []
        for n, row in enumerate(rows, 2):
            try:
                key = clip_key(row["youtube_id"], int(float(row["time_start"])), int(float(row["time_end"])))
            except ValueError:
                raise ConfigError(f"{ann}:{n}: bad time_start/time_end {row['time_start']!r}, {row['time_end']!r}") from None
            if labelled and not row.get("label"):
                raise ConfigError(f"{ann}:{n}: no label (every {split} row needs one)")
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
        for rel, label in read_list_file(ann, self.num_classes, split if split in LABELLED_SPLITS else None):
            items.append(VideoRecord(str(self.root / rel), label, Path(rel).stem))
        return items, str(ann)

    def build_dataset(self, split: str) -> Dataset:
        records = self.records(split)
        common = dict(
            transform=self.transform, num_frames=self.num_frames, frame_stride=self.frame_stride,
            out_of_bounds=self.out_of_bounds, root=self.root, augment=self.augment, decoder=self.decoder,
        )
        if split == "train":
            return KineticsDataset(records, True, max_resample=self.max_resample, **common)  # type: ignore[arg-type]
        if split == "test" and any(r.label < 0 for r in records):
            raise ConfigError(f"kinetics {self.test_split} annotations carry no labels; evaluate with data.test_split=val")
        clips, crops = self.views[split]
        return KineticsDataset(records, False, num_clips=clips, num_crops=crops, missing=self.missing[split], **common)  # type: ignore[arg-type]

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """uint8 clips from the workers -> flipped / colour-jittered / normalised float clips, batched on the device."""
        return self.augment.batch(batch)
