"""Re-encode a Kinetics tree for fast loading: short side S, a keyframe every K frames, H.264.

    python -m lw_lightning.prep_videos SRC DST --short-side 320 --keyint 16 --workers 8

Kinetics comes as YouTube cuts of every size (often 360p-1080p) with keyframes seconds apart, so
a training clip costs a seek back to a far keyframe, decoding everything from there, and
converting full-size frames that are then shrunk to 224². Re-encoded once, every clip decodes
from at most K-1 frames before its start, at the resolution the recipe actually uses.

* Layout and file names are kept: every video below SRC is written to the same relative path
  under DST; other files (annotation CSVs, list files, label maps) are copied, so DST is a
  drop-in ``data.root``. Videos keep their extension: ``.mp4`` holds MP4, every other suffix
  Matroska (a ``.webm`` name then holds H.264 in Matroska; decord and PyAV read the content,
  not the name).
* Frames are scaled down only (a source already at or below S keeps its size, even dims for
  yuv420p) and turned upright when the source carries a display rotation, so the prepared
  file needs no rotation handling. Frame timestamps are kept (variable frame rate stays
  variable); audio is dropped (training reads no audio).
* Resumable: a finished output is skipped; each file is written to a ``.partial`` name and
  renamed when complete, so an interrupted run never leaves a truncated video under its name.
* Files that fail (corrupt or unreadable input) are listed at the end and in
  ``DST/prep_failures.txt``; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

# kept free of torch imports: every encoder process starts fast
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi")  # as lw_lightning.data.kinetics reads them
FAILURES_FILE = "prep_failures.txt"


@dataclass(frozen=True)
class PrepOptions:
    """Encoding settings (x264 via PyAV)."""

    short_side: int = 320
    keyint: int = 16
    crf: int = 23
    preset: str = "veryfast"


@dataclass
class PrepReport:
    """What a run did: files written, skipped as already finished, failed (relative path -> reason), copied."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)


def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(H, W)`` with the short side scaled down to ``short_side`` (never up), both even."""
    scale = min(1.0, short_side / min(height, width))
    h, w = max(2, round(height * scale)), max(2, round(width * scale))
    return h - h % 2, w - w % 2


def _rotation(stream, first_frame) -> int:
    degrees = float(getattr(first_frame, "rotation", 0) or 0)
    tags = {k.lower(): v for k, v in (stream.metadata or {}).items()}
    if degrees == 0 and "rotate" in tags:
        try:
            degrees = -float(tags["rotate"])
        except ValueError:
            degrees = 0.0
    return int(round(degrees / 90.0)) % 4 * 90


def prepare_video(src: Path, dst: Path, opts: PrepOptions) -> int:
    """Re-encode ``src`` to ``dst`` (written to a ``.partial`` name, then renamed); returns frames written.

    Raises on unreadable input (the caller records it); the partial file is removed then.
    """
    import av

    partial = dst.with_name(f".{dst.name}.partial")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fmt = "mp4" if dst.suffix.lower() == ".mp4" else "matroska"
    frames_out = 0
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise ValueError("no video stream")
            in_stream = inp.streams.video[0]
            in_stream.codec_context.thread_count = 1  # parallelism comes from the worker processes
            decoded = inp.decode(in_stream)
            first = next(decoded, None)
            if first is None:
                raise ValueError("no decodable frame")
            rotation = _rotation(in_stream, first)
            h, w = (first.height, first.width) if rotation in (0, 180) else (first.width, first.height)
            oh, ow = target_size(h, w, opts.short_side)
            rate = in_stream.average_rate or in_stream.guessed_rate or 25
            with av.open(str(partial), "w", format=fmt) as out:
                stream = out.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = ow, oh, "yuv420p"
                stream.codec_context.time_base = in_stream.time_base
                stream.codec_context.gop_size = opts.keyint
                stream.codec_context.thread_count = 1
                stream.options = {
                    "crf": str(opts.crf),
                    "preset": opts.preset,
                    "keyint_min": str(opts.keyint),
                    "sc_threshold": "0",
                }
                last_pts = None
                for frame in _chain(first, decoded):
                    out_frame = _resized(frame, rotation, oh, ow)
                    pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + 1)
                    if last_pts is not None and pts <= last_pts:  # repeated / unordered timestamps: keep them increasing
                        pts = last_pts + 1
                    out_frame.pts, out_frame.time_base, last_pts = pts, in_stream.time_base, pts
                    for packet in stream.encode(out_frame):
                        out.mux(packet)
                    frames_out += 1
                for packet in stream.encode():
                    out.mux(packet)
        os.replace(partial, dst)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return frames_out


def _chain(first, rest) -> Iterator:
    yield first
    yield from rest


def _resized(frame, rotation: int, oh: int, ow: int):
    import av

    if rotation == 0:
        return frame.reformat(width=ow, height=oh, format="yuv420p", interpolation="BICUBIC")
    sh, sw = (oh, ow) if rotation == 180 else (ow, oh)  # the stored (sideways) frame's target size
    rgb = frame.to_ndarray(format="rgb24", width=sw, height=sh, interpolation="BICUBIC")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(rgb, k=rotation // 90)), format="rgb24")


def _job(args: tuple[str, str, PrepOptions]) -> tuple[str, str | None, float]:
    src, dst, opts = args
    start = time.perf_counter()
    try:
        prepare_video(Path(src), Path(dst), opts)
        return src, None, time.perf_counter() - start
    except Exception as err:  # corrupt input: recorded, the run goes on
        text = str(err).strip().splitlines()
        return src, f"{type(err).__name__}: {text[0][:200] if text else ''}", time.perf_counter() - start


def scan_tree(src: Path) -> tuple[list[Path], list[Path]]:
    """Videos and other files below ``src`` (sorted, relative paths; ``.partial`` leftovers ignored)."""
    videos, others = [], []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for fn in sorted(filenames):
            rel = (Path(dirpath) / fn).relative_to(src)
            if fn.endswith(".partial") or fn == FAILURES_FILE:
                continue
            (videos if rel.suffix.lower() in VIDEO_EXTS else others).append(rel)
    return videos, others


def prepare_tree(src: Path, dst: Path, opts: PrepOptions, workers: int = 1, progress: bool = True) -> PrepReport:
    """Prepare every video below ``src`` into ``dst`` (see the module docstring)."""
    src, dst = src.resolve(), dst.resolve()
    if not src.is_dir():
        raise ValueError(f"source folder {src} does not exist")
    if dst == src or src in dst.parents:
        raise ValueError(f"destination {dst} must not be the source folder or inside it")
    if opts.short_side < 2 or opts.keyint < 1:
        raise ValueError(f"--short-side must be >= 2 and --keyint >= 1, got {opts.short_side}, {opts.keyint}")
    videos, others = scan_tree(src)
    report = PrepReport()
    for rel in others:  # annotations, list files, label maps: DST becomes a complete data root
        out = dst / rel
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, out)
            report.copied.append(rel.as_posix())
    todo = []
    for rel in videos:
        if (dst / rel).exists():
            report.skipped.append(rel.as_posix())
        else:
            todo.append((str(src / rel), str(dst / rel), opts))
    bar = _progress(len(todo), progress)
    if workers > 1 and len(todo) > 1:
        # fork where there is one: the parent has decoded nothing, and workers start without re-importing
        ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            results = pool.imap_unordered(_job, todo, chunksize=1)
            _collect(results, src, report, bar)
    else:
        _collect(map(_job, todo), src, report, bar)
    if bar is not None:
        bar.close()
    failures = dst / FAILURES_FILE
    if report.failed:
        dst.mkdir(parents=True, exist_ok=True)
        failures.write_text("".join(f"{rel}\t{why}\n" for rel, why in sorted(report.failed.items())))
    else:
        failures.unlink(missing_ok=True)
    return report


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="prep", file=sys.stderr, dynamic_ncols=True)


def _collect(results, src: Path, report: PrepReport, bar) -> None:
    for path, error, _seconds in results:
        rel = Path(path).relative_to(src).as_posix()
        if error is None:
            report.written.append(rel)
        else:
            report.failed[rel] = error
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=len(report.failed), refresh=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lw_lightning.prep_videos", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="Kinetics folder to read (any layout)")
    parser.add_argument("dst", type=Path, help="output folder (same layout and file names)")
    parser.add_argument(
        "--short-side", type=int, default=PrepOptions.short_side, help="scale the short side down to this (default 320)"
    )
    parser.add_argument("--keyint", type=int, default=PrepOptions.keyint, help="frames between keyframes (default 16)")
    parser.add_argument("--crf", type=int, default=PrepOptions.crf, help="x264 quality (default 23)")
    parser.add_argument("--preset", default=PrepOptions.preset, help="x264 preset (default veryfast)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="parallel encoder processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    opts = PrepOptions(args.short_side, args.keyint, args.crf, args.preset)
    start = time.perf_counter()
    try:
        report = prepare_tree(args.src, args.dst, opts, workers=max(1, args.workers), progress=not args.no_progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"prep: {len(report.written)} videos written, {len(report.skipped)} already done, {len(report.copied)} other files copied, "
        f"{len(report.failed)} failed in {time.perf_counter() - start:.1f} s -> {args.dst}"
    )
    if report.failed:
        print(f"{len(report.failed)} file(s) failed (also in {args.dst / FAILURES_FILE}):", file=sys.stderr)
        for rel, why in sorted(report.failed.items()):
            print(f"  {rel}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
