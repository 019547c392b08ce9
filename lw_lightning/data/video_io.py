"""Video reading: decord (or torchcodec) first, PyAV when it fails or the video must be rotated.

decord is the fast path, one reader per sample inside the DataLoader worker. Why this shape
(dmlc/decord issues): a reader built in the parent and shared with forked workers can deadlock
(#294); decord's own threads oversubscribe next to DataLoader workers (#314, #332), so
``num_threads=1``; importing decord before torch can segfault (#293), so decord is imported on
first use, after torch. ``AVReader`` leaks memory (#279): only ``VideoReader`` is used, and it is
dropped as soon as ``get_batch`` returns. The decoded batch is handed to numpy through DLPack, with
no copy: it lives in decord's buffer until the last view of it is gone.

torchcodec (``decoder="torchcodec"``; it decodes only where the system has FFmpeg's libraries,
:func:`torchcodec_problem` says what is missing) takes decord's place when asked for: one FFmpeg thread, exact seeks from a packet scan,
frames ``[N, H, W, 3]`` uint8 as decord gives them. On this project's benchmark it decodes 1.4-1.6x
faster than decord (docs/video.md). It also turns MP4 files upright itself, so the rotation policy
below is the same for both.

PyAV (the FFmpeg the writer side uses) is the fallback decoder:

* decord 0.6.0 fails on some valid files, e.g. frames whose RGB row is not a multiple of its
  copy alignment (24x20 and 48x36 videos raise ``from_size == to_size``). A video only counts as
  corrupt when PyAV cannot decode it either.
* Rotation: phones store the display orientation as a display matrix (or, in old files, a
  ``rotate`` tag) and leave the pixels as they were captured. decord honours it for MP4/MOV
  (it rotates the frames itself) but not for others (Matroska/WebM, where Kinetics has many
  files). MP4/MOV files therefore go to decord without a probe; any other file is probed once
  with PyAV (an open and one decoded frame, cached per process), and a rotated one is decoded
  with PyAV, which reports the matrix exactly, and turned upright here, so clips are never fed
  sideways whichever container they come in.

Cheap decoding:

* decord seeks to the keyframe before each wanted frame that lies past the current keyframe
  interval (``SeekAccurate``), so a late clip never decodes from frame 0; the frames of every
  clip of one video (multi-view evaluation) come from one reader and one ``get_batch``.
* PyAV scans the packets once (no decoding: timestamps and keyframe flags), seeks to the keyframe
  before each clip and decodes forward from there; a file whose timestamps do not add up is
  decoded from the start instead (exact for any codec).
* ``size=(h, w)`` makes the decoder deliver frames at that size (decord ``VideoReader(width=,
  height=)``, FFmpeg's scale filter; PyAV ``reformat``): a source much larger than what training
  needs is never converted to RGB at full size.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch  # must be imported before decord
import torch.utils.dlpack

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


def read_clip_frames(
    path: str | os.PathLike, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None = None,
    decoder: str = "decord",
) -> np.ndarray:
    """Open ``path``, pick indices with ``choose(num_frames)``, return ``[*idx.shape, H, W, 3]`` uint8 RGB.

    Frames come out upright (the display rotation applied), at ``size = (H, W)`` of the upright
    frame when given (scaled by the decoder), else at the stored size. ``choose`` gets the
    decodable length so sampling and decoding see the same video; it may be called again when
    the first decoder fails. ``decoder`` (one of :data:`DECODERS`) is tried first; a video that
    neither it nor PyAV can decode raises :class:`VideoReadError`.
    """
    if decoder not in _FAST:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    rotation = 0 if decord_rotates(path) else display_rotation(path)
    first_failed = False
    if rotation == 0:
        first_failed = True
        try:
            return _FAST[decoder](path, choose, size)
        except VideoReadError as err:
            first = err
        rotation = display_rotation(path)  # PyAV rotates an MP4 itself too, when the first decoder failed on it
    stored = None if size is None else (size[::-1] if rotation in (90, 270) else size)
    try:
        frames = _pyav_clip(path, choose, stored)
    except VideoReadError as err:
        if first_failed:  # both decoders failed: name both reasons
            raise VideoReadError(f"{first}; PyAV: {_first_line(err)}") from None
        raise
    if first_failed:
        log.info("%s failed, PyAV decoded %s (%s)", decoder, path, first)
    return upright(frames, rotation)


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn ``[..., H, W, C]`` frames by ``rotation`` degrees counter-clockwise (a multiple of 90)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(-3, -2))) if k else frames


@dataclass(frozen=True)
class VideoInfo:
    """What the loader needs before decoding: display rotation and the upright frame size (0: unknown)."""

    rotation: int = 0
    height: int = 0
    width: int = 0


#: containers whose display matrix decord applies itself (FFmpeg's mov demuxer exports it)
DECORD_ROTATES = (".mp4", ".m4v", ".mov")


def decord_rotates(path: str | os.PathLike) -> bool:
    """True for MP4/MOV files: decord (and torchcodec) turn their frames upright, no PyAV probe is needed."""
    return os.fspath(path).lower().endswith(DECORD_ROTATES)


def _file_key(path: str | os.PathLike) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.fspath(path), st.st_mtime_ns, st.st_size)


def probe(path: str | os.PathLike) -> VideoInfo:
    """What the loader needs before decoding ``path``: rotation and upright size (0: unknown).

    MP4/MOV: no probe (decord rotates them): rotation 0 and an unknown size, which the Kinetics
    dataset learns from the first decode and shares between its workers. Other containers: one PyAV open and
    one decoded frame, cached per file and version. The rotation is the counter-clockwise degrees
    (0, 90, 180, 270) that turn the stored frames upright: the first frame's display matrix, else
    a legacy ``rotate`` tag (clockwise degrees, as old FFmpeg wrote and honoured it). An
    unreadable file gives ``VideoInfo()``; decoding then reports the real error.
    """
    key = _file_key(path)
    if key is None:
        return VideoInfo()  # missing: the decoders report it
    if decord_rotates(path):
        return VideoInfo()
    return _probe(*key)


def display_rotation(path: str | os.PathLike) -> int:
    """Counter-clockwise degrees to turn the stored frames of ``path`` upright (PyAV probe, any container)."""
    key = _file_key(path)
    return 0 if key is None else _probe(*key).rotation


@functools.lru_cache(maxsize=65536)
def _probe(path: str, mtime_ns: int, size: int) -> VideoInfo:
    av = _av()
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            tags = {k.lower(): v for k, v in (stream.metadata or {}).items()}
            frame = next(container.decode(stream), None)
            degrees = float(frame.rotation) if frame is not None else 0.0
            h, w = (frame.height, frame.width) if frame is not None else (stream.height or 0, stream.width or 0)
    except Exception:
        return VideoInfo()
    if degrees == 0 and "rotate" in tags:
        try:
            degrees = -float(tags["rotate"])  # the tag is clockwise
        except ValueError:
            degrees = 0.0
    rotation = int(round(degrees / 90.0)) % 4 * 90
    return VideoInfo(rotation, *((w, h) if rotation in (90, 270) else (h, w)))


def _check_indices(idx: np.ndarray, total: int, path: str | os.PathLike) -> np.ndarray:
    flat = idx.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= total):
        raise ValueError(f"frame indices outside [0, {total}) for {path}")
    return flat


def _decord_clip(path: str | os.PathLike, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    decord = _decord()
    h, w = size or (-1, -1)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, width=w, height=h)
    except Exception as err:  # decord raises DECORDError / RuntimeError subclasses inconsistently
        raise VideoReadError(f"cannot open video {path}: {_first_line(err)}") from None
    try:
        total = len(reader)
        if total < 1:
            raise VideoReadError(f"video {path} has no frames")
        idx = np.asarray(choose(total), dtype=np.int64)
        flat = _check_indices(idx, total, path)
        # decode each distinct frame once, in order: decord decodes forward within a keyframe
        # interval and seeks to the keyframe before a frame further ahead
        unique, inverse = np.unique(flat, return_inverse=True)
        frames = _as_numpy(reader.get_batch(unique.tolist()))
    except (VideoReadError, ValueError):  # ours, and out-of-range indices (a caller bug): as they are
        raise
    except Exception as err:
        failure = f"cannot decode video {path}: {_first_line(err)}"
    else:
        failure = None
    finally:
        del reader
    if failure is not None:
        # Raised here, outside the handler: decord's error keeps decord's frames alive through its
        # traceback, and with them the reader (``self``). A reader still alive when DataLoader
        # workers fork is destroyed in a child without its decoding threads, which hangs or crashes.
        raise VideoReadError(failure)
    if frames.ndim != 4 or frames.shape[0] != unique.size or frames.shape[-1] != 3:
        raise VideoReadError(f"decoder returned {frames.shape} for {unique.size} frames of {path}")
    if unique.size == flat.size and np.array_equal(unique, flat):  # sorted, no repeats (a training clip): no copy
        return frames.reshape(*idx.shape, *frames.shape[1:])
    return frames[inverse].reshape(*idx.shape, *frames.shape[1:])


def torchcodec_problem() -> str | None:
    """None when torchcodec can decode video here, else what is missing (for a clear config error)."""
    try:
        import torchcodec
    except Exception as err:  # not installed, or built for another torch
        return f"torchcodec does not import ({_first_line(err)}); pip install torchcodec"
    if getattr(torchcodec, "ffmpeg_major_version", None) is None:
        return "torchcodec finds no FFmpeg libraries (it needs FFmpeg 4-8; Debian/Ubuntu: apt install ffmpeg)"
    return None


def _torchcodec_clip(
    path: str | os.PathLike, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None = None,
) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    try:
        # exact: a packet scan gives the true frame count and exact seeks (as decord's SeekAccurate);
        # one FFmpeg thread: the parallelism comes from DataLoader workers
        reader = VideoDecoder(
            str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC",
            transforms=None if size is None else [Resize(size)],
        )
        total = int(reader.metadata.num_frames or 0)
    except Exception as err:
        failure: str | None = f"cannot open video {path}: {_first_line(err)}"
    else:
        failure = None
    if failure is not None:  # raised outside the handler, as in _decord_clip: no decoder kept alive by a traceback
        raise VideoReadError(failure)
    if total < 1:
        raise VideoReadError(f"video {path} has no frames")
    idx = np.asarray(choose(total), dtype=np.int64)
    flat = _check_indices(idx, total, path)
    try:
        frames = reader.get_frames_at(flat.tolist()).data  # decodes each distinct frame once, in order
    except Exception as err:
        failure = f"cannot decode video {path}: {_first_line(err)}"
    finally:
        del reader
    if failure is not None:
        raise VideoReadError(failure)
    if frames.ndim != 4 or frames.shape[0] != flat.size or frames.shape[-1] != 3:
        raise VideoReadError(f"decoder returned {tuple(frames.shape)} for {flat.size} frames of {path}")
    return frames.numpy().reshape(*idx.shape, *frames.shape[1:])


def _as_numpy(batch: Any) -> np.ndarray:
    """decord's frames as a numpy array over decord's own buffer (DLPack), not a copy of it.

    ``asnumpy()`` copies the whole decoded batch (7.4 MB for 32 frames of 320x240) into freshly
    mapped pages; on the 2-core benchmark machine that copy was 5-20% of decoding a clip
    (docs/video.md). The array keeps decord's NDArray alive until the last view of it is gone.
    """
    if hasattr(batch, "to_dlpack"):
        return torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()
    return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # decord2 returns torch


_FAST: dict[str, Callable[..., np.ndarray]] = {"decord": _decord_clip, "torchcodec": _torchcodec_clip}
#: the fast decoders ``read_clip_frames`` can be asked for (PyAV is the fallback of both)
DECODERS = tuple(_FAST)


def _rgb(frame: Any, size: tuple[int, int] | None) -> np.ndarray:
    """A decoded frame as ``[H, W, 3]`` uint8 RGB, scaled to ``size = (H, W)`` when given."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", height=size[0], width=size[1], interpolation="BICUBIC")


def _pyav_frames(path: str | os.PathLike, wanted: set[int], size: tuple[int, int] | None = None) -> tuple[dict[int, np.ndarray], int]:
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
                    got[n] = _rgb(frame, size)
                n += 1
                if n > last:
                    break
    except Exception as err:  # av.FFmpegError, IndexError (no video stream), ...
        raise VideoReadError(f"cannot decode video {path} with PyAV: {_first_line(err)}") from None
    return got, n


@dataclass(frozen=True)
class _PacketIndex:
    """One packet scan of the video stream: frame count, and (when usable) every frame's
    presentation timestamp in display order and the keyframes' timestamps."""

    total: int
    pts: list[int] | None
    keys: list[int]


def _pyav_scan(path: str | os.PathLike) -> _PacketIndex:
    """Demux (no decoding) the video stream of ``path``; timestamps are dropped when a packet has
    none or two packets share one (seeking by them would then be guesswork)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            pts: list[int | None] = []
            keys: list[int] = []
            for packet in container.demux(stream):
                if not packet.size:  # the flush packet at the end
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe and packet.pts is not None:
                    keys.append(int(packet.pts))
            header = int(stream.frames or 0)
    except Exception as err:
        raise VideoReadError(f"cannot open video {path} with PyAV: {_first_line(err)}") from None
    total = len(pts) or header
    if not pts or any(p is None for p in pts) or len(set(pts)) != len(pts) or not keys:
        return _PacketIndex(total, None, [])
    return _PacketIndex(total, sorted(int(p) for p in pts), sorted(keys))  # type: ignore[arg-type]


def _pyav_seek_frames(
    path: str | os.PathLike, wanted: set[int], index: _PacketIndex, size: tuple[int, int] | None = None,
) -> dict[int, np.ndarray] | None:
    """Frames ``wanted`` by seeking to the keyframe before each one that lies beyond the current
    keyframe interval and decoding forward; None when the decoded timestamps do not match the scan."""
    assert index.pts is not None
    av = _av()
    pts, keys = index.pts, index.keys
    frame_of = {p: i for i, p in enumerate(pts)}
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            frames, pos = None, None  # decoding iterator and the pts it last gave
            for i in sorted(wanted):
                if i in got:
                    continue
                target = pts[i]
                key = keys[max(bisect.bisect_right(keys, target) - 1, 0)]
                if frames is None or pos is None or pos < key or pos >= target:
                    container.seek(key, stream=stream, backward=True, any_frame=False)
                    frames, pos = container.decode(stream), None
                for frame in frames:
                    if frame.pts is None:
                        return None
                    pos = int(frame.pts)
                    j = frame_of.get(pos)
                    if j is not None and j in wanted and j not in got:
                        got[j] = _rgb(frame, size)
                    if pos >= target:
                        break
                if i not in got:
                    return None
    except Exception as err:
        raise VideoReadError(f"cannot decode video {path} with PyAV: {_first_line(err)}") from None
    return got


def _pyav_count(path: str | os.PathLike) -> int:
    """Frames in ``path``: its video packets, else the container's count."""
    return _pyav_scan(path).total


def _pyav_clip(path: str | os.PathLike, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    index = _pyav_scan(path)
    total = index.total
    for attempt in range(2):  # packets that do not all decode: choose again from what decoded
        if total < 1:
            raise VideoReadError(f"video {path} has no frames")
        idx = np.asarray(choose(total), dtype=np.int64)
        flat = _check_indices(idx, total, path)
        wanted = set(flat.tolist())
        got = _pyav_seek_frames(path, wanted, index, size) if index.pts is not None and attempt == 0 else None
        if got is None:
            got, decoded = _pyav_frames(path, wanted, size)
        else:
            decoded = total
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
