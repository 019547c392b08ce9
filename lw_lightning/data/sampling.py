"""Frame-index sampling as pure functions of the video length (mmaction2 ``SampleFrames`` semantics).

A clip is ``num_frames`` indices ``start, start+stride, …`` spanning ``(num_frames-1)·stride + 1``
frames. Training draws the start uniformly from every position where the clip fits; testing takes
``num_clips`` starts evenly spaced from the first to the last fitting position (one clip: the
centre). Videos shorter than a clip keep start 0 and their out-of-range indices are either looped
(``"loop"``: ``i mod total``, mmaction2's default) or clamped to the last frame (``"clamp"``).
"""

from __future__ import annotations

import numpy as np
import torch

OUT_OF_BOUNDS = ("loop", "clamp")


def clip_span(num_frames: int, stride: int) -> int:
    """Frames covered by one clip."""
    return (num_frames - 1) * stride + 1


def clip_indices(total: int, start: int, num_frames: int, stride: int, out_of_bounds: str = "loop") -> np.ndarray:
    """Indices of one clip starting at ``start``, folded into ``[0, total)``."""
    if total < 1:
        raise ValueError("cannot sample frames from an empty video")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
    idx = start + stride * np.arange(num_frames, dtype=np.int64)
    if out_of_bounds == "loop":
        return idx % total
    if out_of_bounds == "clamp":
        return np.clip(idx, 0, total - 1)
    raise ValueError(f"out_of_bounds must be one of {OUT_OF_BOUNDS}, got {out_of_bounds!r}")


def max_start(total: int, num_frames: int, stride: int) -> int:
    """Last start at which a clip fits entirely (0 when the video is shorter than a clip)."""
    return max(total - clip_span(num_frames, stride), 0)


def sample_train_clip(
    total: int, num_frames: int, stride: int, generator: torch.Generator | None = None, out_of_bounds: str = "loop"
) -> np.ndarray:
    """One clip at a uniformly random start (torch RNG, so DataLoader workers differ and runs are
    reproducible under ``seed_everything``)."""
    start = int(torch.randint(max_start(total, num_frames, stride) + 1, (1,), generator=generator))
    return clip_indices(total, start, num_frames, stride, out_of_bounds)


def eval_clip_starts(total: int, num_frames: int, stride: int, num_clips: int) -> list[int]:
    """``num_clips`` starts evenly spaced over the fitting range; one clip is centred."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    top = max_start(total, num_frames, stride)
    if num_clips == 1:
        return [top // 2]
    return [int(round(i * top / (num_clips - 1))) for i in range(num_clips)]


def sample_test_clips(total: int, num_frames: int, stride: int, num_clips: int, out_of_bounds: str = "loop") -> np.ndarray:
    """``[num_clips, num_frames]`` deterministic indices for multi-view evaluation."""
    starts = eval_clip_starts(total, num_frames, stride, num_clips)
    return np.stack([clip_indices(total, s, num_frames, stride, out_of_bounds) for s in starts])
