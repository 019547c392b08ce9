"""The Kinetics clip dataset: decode, crop, and the corrupt-video policy of the package docstring."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..sampling import sample_test_clips, sample_train_clip
from ..video_augment import VideoAugment
from ..video_io import DECODERS, VideoReadError, probe, read_clip_frames
from .clip_transform import ClipTransform
from .layout import VideoRecord

log = logging.getLogger(__name__)


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
        root: str | Path | None = None, augment: VideoAugment | None = None, decoder: str = "decord", missing: int = 0,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.records = records
        self.missing = missing  # annotated clips without a file, not in ``records`` (data/missing.py)
        self.decoder = decoder
        self.root = Path(root) if root is not None else None  # source() names files relative to it
        self.train = train
        # torchcodec's scaler (its Resize transform) is slower than decoding at the stored size and
        # resizing the crop here: 1.20-1.33x the time at 720p (benchmarks/decoder_resize.py, docs/video.md)
        self.transform = transform.without_decoder_resize() if decoder == "torchcodec" else transform
        self.augment = augment or VideoAugment()
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.out_of_bounds = out_of_bounds
        self.max_resample = max_resample
        # Upright (H, W) of each record as first decoded at its stored size, 0 while unknown. In
        # shared memory, so a size one worker learns serves every worker: MP4 files are not probed
        # before decoding, and a training video comes back once an epoch, rarely to the same worker.
        self.sizes = torch.zeros(len(records), 2, dtype=torch.int32).share_memory_()

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
        return read_clip_frames(path, choose, size, self.decoder)

    def train_indices(self, index: int, total: int) -> np.ndarray:
        """Frame indices of a training clip of sample ``index`` from a video of ``total`` frames."""
        return sample_train_clip(total, self.num_frames, self.frame_stride, out_of_bounds=self.out_of_bounds)

    def frame_size(self, index: int) -> tuple[int, int]:
        """Upright ``(H, W)`` of record ``index`` before decoding it, ``(0, 0)`` when unknown: a size
        decoded before by any worker, else a PyAV probe (non-MP4 containers only)."""
        h, w = self.sizes[index].tolist()
        if h > 0 and w > 0:
            return h, w
        info = probe(self.records[index].path)
        return info.height, info.width

    def _learn_size(self, index: int, height: int, width: int) -> None:
        self.sizes[index] = torch.tensor([height, width], dtype=torch.int32)

    def train_clip(self, index: int) -> Tensor:
        """Decode and cut one training clip of sample ``index``: uint8 ``[T, s, s, 3]``."""
        height, width = self.frame_size(index)
        plan = self.transform.train_plan(height, width) if height > 0 else None
        decode_size = plan.decode_size if plan else None
        frames = self.decode(self.records[index].path, lambda n: self.train_indices(index, n), decode_size)
        if decode_size is None:
            self._learn_size(index, *frames.shape[1:3])
        if plan is None or plan.frame != tuple(frames.shape[1:3]):  # size unknown or not as expected
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
            decode_size = self.transform.eval_decode_size(*self.frame_size(index))
            clips = self.decode(
                rec.path, lambda n: sample_test_clips(n, self.num_frames, self.frame_stride, self.num_clips, self.out_of_bounds),
                decode_size,
            )
            if decode_size is None:
                self._learn_size(index, *clips.shape[-3:-1])
            video, valid = self.transform.eval(clips, self.num_crops), True
        except VideoReadError as err:
            log.warning("corrupt evaluation video (counted, excluded from accuracy): %s", err)
            video, valid = torch.zeros(views, self.num_frames, s, s, 3, dtype=torch.uint8), False
        return {"video": video, "label": torch.tensor(rec.label), "index": torch.tensor(index), "valid": torch.tensor(valid)}
