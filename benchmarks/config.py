"""The ``bench:`` section of a bench config (``conf/bench/*.yaml``), as dataclasses.

Unknown keys are errors (with a suggestion), like everywhere else in the config system.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lw_lightning.config import suggest
from lw_lightning.errors import ConfigError

SUITES = ("images", "video", "data", "overhead", "accuracy")


@dataclass
class ImageGroup:
    """One input resolution of the LookWhere vs full-resolution ViT comparison."""

    size: int
    #: patches LookWhere keeps: int counts or float fractions of the grid.
    ks: list[Any] = field(default_factory=lambda: [0.05, 0.1])
    #: inference batch sizes; the first is the latency batch, the others throughput batches.
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    #: batch of the timed training step (forward + backward + AdamW); null: no training timing.
    train_batch: int | None = 1
    #: measure activation memory of a training step (and CUDA peaks).
    memory: bool = True
    #: also time the reference embed-everything-then-gather extractor at the first k.
    embed_then_gather: bool = False
    #: ``torch.compile`` mode for extra "compiled" rows (default / reduce-overhead / max-autotune…).
    compile: str | None = None


@dataclass
class ImageSuite:
    preset: str = "base"
    groups: list[ImageGroup] = field(default_factory=lambda: [ImageGroup(size=224, ks=[128]), ImageGroup(size=994)])


@dataclass
class VideoSuite:
    """ViViT Model 1 with vs without TokenLearner."""

    presets: list[str] = field(default_factory=lambda: ["base", "large"])
    num_frames: int = 32
    #: TokenLearner tokens per temporal slice of the TokenLearner model.
    num_tokens: int = 16
    #: blocks before TokenLearner; null: half the depth (6 for B, 12 for L).
    tokenlearner_loc: int | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    train_batch: int | None = 1
    #: presets that get training timings and memory (null: all).
    train_presets: list[str] | None = None
    memory: bool = True
    compile: str | None = None


@dataclass
class DataSuite:
    """Kinetics-style clip loading (decord vs PyAV) next to the video model's training rate."""

    #: generated 10-second H.264 videos (reused when ``video_dir`` already holds them).
    videos: int = 16
    seconds: float = 10.0
    fps: int = 25
    width: int = 456
    height: int = 256
    #: keyframe interval in frames (YouTube-like: a keyframe every 2 s).
    gop: int = 50
    video_dir: str | None = None
    #: (frames, stride) clip shapes, e.g. 16x4 and 32x2.
    clips: list[list[int]] = field(default_factory=lambda: [[16, 4], [32, 2]])
    #: decord / pyav / torchcodec: the training loader with that decoder; plain: decord alone in the same workers.
    readers: list[str] = field(default_factory=lambda: ["plain", "decord", "pyav"])
    workers: list[int] = field(default_factory=lambda: [1, 2])
    batch_size: int = 4
    #: clips loaded per measurement (after one warm-up batch).
    clips_per_run: int = 32
    #: interleaved rounds over all readers and worker counts; the median round counts.
    rounds: int = 2
    img_size: int = 224
    #: ViViT preset whose training step rate is shown next to the loading rates (null: none).
    model_preset: str | None = "base"
    model_batch: int = 1
    #: timed training steps of that model (after one warm-up step).
    model_repeats: int = 3


@dataclass
class OverheadSuite:
    """Training steps/s: the ImageClassifier under a Lightning Trainer vs a plain PyTorch loop."""

    model: dict = field(default_factory=lambda: {"arch": "lookwhere", "preset": "tiny", "img_size": [224, 224]})
    k: Any = 0.5
    num_classes: int = 100
    batch_size: int = 32
    warmup_steps: int = 5
    steps: int = 30
    #: alternating Lightning / plain rounds; the median round counts.
    rounds: int = 3


@dataclass
class AccuracyRun:
    """One trained classifier: the recipe it was trained with (so data and model are built the
    same way) and its checkpoint. LookWhere runs are evaluated at every k, the full-res ViT once."""

    #: an experiment name (``demo_finetune``), its file, or the run's saved ``config.yaml``
    config: str
    ckpt_path: str
    #: LookWhere k values (counts or fractions); null: the suite's ``ks``.
    ks: list[Any] | None = None
    overrides: list[str] = field(default_factory=list)
    #: legend entry; null: model name and preset.
    label: str | None = None


@dataclass
class AccuracySuite:
    """Accuracy vs FLOPs of trained classifiers (skipped when ``runs`` is empty)."""

    runs: list[AccuracyRun] = field(default_factory=list)
    ks: list[Any] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    #: evaluation split of the recipe's DataModule: "val" or "test".
    split: str = "val"
    #: evaluate at most this many batches (null: all).
    max_batches: int | None = None


@dataclass
class BenchConfig:
    suites: list[str] = field(default_factory=lambda: ["images", "video", "data", "overhead"])
    device: str = "auto"
    precision: str = "auto"
    #: torch intra-op threads (null: torch's default).
    threads: int | None = None
    warmup: int = 2
    repeats: int = 5
    images: ImageSuite = field(default_factory=ImageSuite)
    video: VideoSuite = field(default_factory=VideoSuite)
    data: DataSuite = field(default_factory=DataSuite)
    overhead: OverheadSuite = field(default_factory=OverheadSuite)
    accuracy: AccuracySuite = field(default_factory=AccuracySuite)


def _build(cls: type, values: Any, path: str) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{path}.{key}'{suggest(str(key), list(fields), path + '.')}")
        sub = {"images": ImageSuite, "video": VideoSuite, "data": DataSuite, "overhead": OverheadSuite, "accuracy": AccuracySuite}
        if cls is BenchConfig and key in sub:
            kwargs[key] = _build(sub[key], value, f"{path}.{key}")
        elif cls is AccuracySuite and key == "runs":
            if not isinstance(value, list):
                raise ConfigError(f"{path}.runs must be a list of {{config, ckpt_path, ...}} mappings")
            kwargs[key] = [_build(AccuracyRun, r, f"{path}.runs[{i}]") for i, r in enumerate(value)]
        elif cls is ImageSuite and key == "groups":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}.groups must be a non-empty list")
            kwargs[key] = [_build(ImageGroup, g, f"{path}.groups[{i}]") for i, g in enumerate(value)]
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_bench_config(values: dict | None) -> BenchConfig:
    """Plain ``bench:`` mapping -> :class:`BenchConfig` (raises :class:`ConfigError`)."""
    cfg = _build(BenchConfig, values or {}, "bench")
    bad = [s for s in cfg.suites if s not in SUITES]
    if bad:
        raise ConfigError(f"bench.suites: unknown suite(s) {bad}; choose from {list(SUITES)}")
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise ConfigError("bench.repeats must be >= 1 and bench.warmup >= 0")
    for r in cfg.data.readers:
        if r not in ("plain", "decord", "pyav", "torchcodec"):
            raise ConfigError(f"bench.data.readers: unknown reader {r!r} (plain, decord, pyav or torchcodec)")
    if "torchcodec" in cfg.data.readers and "data" in cfg.suites:
        from lw_lightning.data.video_io import torchcodec_problem

        problem = torchcodec_problem()
        if problem:
            raise ConfigError(f"bench.data.readers: torchcodec: {problem}")
    if cfg.accuracy.split not in ("val", "test"):
        raise ConfigError(f"bench.accuracy.split must be 'val' or 'test', got {cfg.accuracy.split!r}")
    return cfg
