"""Lazy decord video reading, one reader per sample inside the DataLoader worker.

Why this shape (dmlc/decord issues): a reader built in the parent and shared with forked workers
can deadlock (#294); decord's own threads oversubscribe next to DataLoader workers (#314, #332), so
``num_threads=1``; importing decord before torch can segfault (#293), so decord is imported on first
use, after torch. ``AVReader`` leaks memory (#279): only ``VideoReader`` is used, and it is dropped
as soon as the frames are copied out.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch  # noqa: F401  (must be imported before decord)


class VideoReadError(RuntimeError):
    """A video that cannot be opened or decoded (missing streams, truncated, corrupt)."""


@functools.lru_cache(maxsize=1)
def _decord() -> Any:
    import decord

    return decord


def read_clip_frames(path: str | os.PathLike, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    """Open ``path``, pick indices with ``choose(num_frames)``, return ``[*idx.shape, H, W, 3]`` uint8 RGB.

    ``choose`` gets the decodable length so sampling and decoding see the same video. Any decoder
    failure becomes :class:`VideoReadError`.
    """
    decord = _decord()
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises DECORDError / RuntimeError subclasses inconsistently
        raise VideoReadError(f"cannot open video {path}: {_first_line(err)}") from None
    try:
        total = len(reader)
        if total < 1:
            raise VideoReadError(f"video {path} has no frames")
        idx = np.asarray(choose(total), dtype=np.int64)
        flat = idx.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= total):
            raise ValueError(f"frame indices outside [0, {total}) for {path}")
        # decode each distinct frame once, in order (decord seeks are cheapest going forward)
        unique, inverse = np.unique(flat, return_inverse=True)
        batch = reader.get_batch(unique.tolist())
        frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # decord2 returns torch
    except (VideoReadError, ValueError):  # ours, and out-of-range indices (a caller bug): as they are
        raise
    except Exception as err:
        raise VideoReadError(f"cannot decode video {path}: {_first_line(err)}") from None
    finally:
        del reader
    if frames.ndim != 4 or frames.shape[0] != unique.size:
        raise VideoReadError(f"decoder returned {frames.shape} for {unique.size} frames of {path}")
    return frames[inverse].reshape(*idx.shape, *frames.shape[1:])


def read_frames(path: str | os.PathLike, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frames ``indices`` of ``path`` as ``[len, H, W, 3]`` uint8 (indices must be in range)."""
    return read_clip_frames(path, lambda _total: np.asarray(indices))


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames decord reports for ``path``."""
    decord = _decord()
    try:
        return len(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1))
    except Exception as err:
        raise VideoReadError(f"cannot open video {path}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
