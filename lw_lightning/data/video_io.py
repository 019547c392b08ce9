"""Video reading: decord first, PyAV when decord fails or the video must be rotated.

decord is the fast path, one reader per sample inside the DataLoader worker. Why this shape
(dmlc/decord issues): a reader built in the parent and shared with forked workers can deadlock
(#294); decord's own threads oversubscribe next to DataLoader workers (#314, #332), so
``num_threads=1``; importing decord before torch can segfault (#293), so decord is imported on
first use, after torch. ``AVReader`` leaks memory (#279): only ``VideoReader`` is used, and it is
dropped as soon as the frames are copied out.

PyAV (the FFmpeg the writer side uses) is the second decoder:

* decord 0.6.0 fails on some valid files, e.g. frames whose RGB row is not a multiple of its
  copy alignment (24x20 and 48x36 videos raise ``from_size == to_size``). A video only counts as
  corrupt when PyAV cannot decode it either.
* Rotation: phones store the display orientation as a display matrix (or, in old files, a
  ``rotate`` tag) and leave the pixels as they were captured. decord honours it for some
  containers (mp4) but not others (Matroska/WebM, where Kinetics has many files). A rotated
  video is therefore decoded with PyAV, which reports the matrix exactly, and turned upright
  here, so clips are never fed sideways whichever container they come in.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch  # noqa: F401  (must be imported before decord)

log = logging.getLogger(__name__)


class VideoReadError(RuntimeError):
    """A video that cannot be opened or decoded (missing streams, truncated, corrupt)."""


@functools.lru_cache(maxsize=1)
def _decord() -> Any:
    import decord

    return decord


@functools.lru_cache(maxsize=1)
def _av() -> Any:
    import av

    return av


def read_clip_frames(path: str | os.PathLike, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    """Open ``path``, pick indices with ``choose(num_frames)``, return ``[*idx.shape, H, W, 3]`` uint8 RGB.

    Frames come out upright (the display rotation applied). ``choose`` gets the decodable length
    so sampling and decoding see the same video; it may be called again when the first decoder
    fails. A video that neither decord nor PyAV can decode raises :class:`VideoReadError`.
    """
    rotation = display_rotation(path)
    if rotation == 0:
        try:
            return _decord_clip(path, choose)
        except VideoReadError as err:
            first = err
    try:
        frames = _pyav_clip(path, choose)
    except VideoReadError as err:
        if rotation == 0:  # both decoders failed: name both reasons
            raise VideoReadError(f"{first}; PyAV: {_first_line(err)}") from None
        raise
    if rotation == 0:
        log.info("decord failed, PyAV decoded %s (%s)", path, first)
    return upright(frames, rotation)


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn ``[..., H, W, C]`` frames by ``rotation`` degrees counter-clockwise (a multiple of 90)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(-3, -2))) if k else frames


def display_rotation(path: str | os.PathLike) -> int:
    """Counter-clockwise degrees (0, 90, 180, 270) to turn the stored frames to upright, 0 when unknown.

    Read with PyAV from the first frame's display matrix; without one, from a legacy ``rotate``
    tag (clockwise degrees, as old FFmpeg wrote and honoured it). Cached per file and version.
    """
    try:
        st = os.stat(path)
    except OSError:
        return 0  # missing: the decoders report it
    return _display_rotation(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=65536)
def _display_rotation(path: str, mtime_ns: int, size: int) -> int:
    av = _av()
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            tags = {k.lower(): v for k, v in (stream.metadata or {}).items()}
            frame = next(container.decode(stream), None)
            degrees = float(frame.rotation) if frame is not None else 0.0
    except Exception:  # unreadable: no rotation known; decoding reports the real error
        return 0
    if degrees == 0 and "rotate" in tags:
        try:
            degrees = -float(tags["rotate"])  # the tag is clockwise
        except ValueError:
            return 0
    return int(round(degrees / 90.0)) % 4 * 90


def _check_indices(idx: np.ndarray, total: int, path: str | os.PathLike) -> np.ndarray:
    flat = idx.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= total):
        raise ValueError(f"frame indices outside [0, {total}) for {path}")
    return flat


def _decord_clip(path: str | os.PathLike, choose: Callable[[int], np.ndarray]) -> np.ndarray:
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
        flat = _check_indices(idx, total, path)
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
    if frames.ndim != 4 or frames.shape[0] != unique.size or frames.shape[-1] != 3:
        raise VideoReadError(f"decoder returned {frames.shape} for {unique.size} frames of {path}")
    return frames[inverse].reshape(*idx.shape, *frames.shape[1:])


def _pyav_frames(path: str | os.PathLike, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode ``path`` from the start until every index in ``wanted`` is seen (or the end):
    ({index: frame}, frames decoded). Decoding in order is exact for any codec (no seeking)."""
    av = _av()
    got: dict[int, np.ndarray] = {}
    last = max(wanted) if wanted else -1
    n = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # no decoder threads next to DataLoader workers
            for frame in container.decode(stream):
                if n in wanted:
                    got[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > last:
                    break
    except Exception as err:  # av.FFmpegError, IndexError (no video stream), ...
        raise VideoReadError(f"cannot decode video {path} with PyAV: {_first_line(err)}") from None
    return got, n


def _pyav_count(path: str | os.PathLike) -> int:
    """Frames in ``path``: the container's count, else its video packets, else a full decode."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            packets = sum(1 for p in container.demux(stream) if p.size)
    except Exception as err:
        raise VideoReadError(f"cannot open video {path} with PyAV: {_first_line(err)}") from None
    return packets


def _pyav_clip(path: str | os.PathLike, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    total = _pyav_count(path)
    for _ in range(2):  # a header that overstates the length: choose again from what decoded
        if total < 1:
            raise VideoReadError(f"video {path} has no frames")
        idx = np.asarray(choose(total), dtype=np.int64)
        flat = _check_indices(idx, total, path)
        got, decoded = _pyav_frames(path, set(flat.tolist()))
        if all(int(i) in got for i in flat):
            frames = np.stack([got[int(i)] for i in flat]) if flat.size else np.zeros((0, 0, 0, 3), np.uint8)
            return frames.reshape(*idx.shape, *frames.shape[1:])
        total = decoded
    raise VideoReadError(f"video {path}: PyAV decoded {total} frames, fewer than its header and packets promise")


def read_frames(path: str | os.PathLike, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frames ``indices`` of ``path`` as ``[len, H, W, 3]`` uint8, upright (indices must be in range)."""
    return read_clip_frames(path, lambda _total: np.asarray(indices))


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames in ``path`` (decord's count, PyAV's when decord cannot open it)."""
    decord = _decord()
    try:
        return len(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1))
    except Exception as err:
        first = _first_line(err)
    try:
        return _pyav_count(path)
    except VideoReadError as err:
        raise VideoReadError(f"cannot open video {path}: {first}; PyAV: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
