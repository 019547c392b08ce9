"""Kinetics clip loading: decord vs PyAV, 1..n DataLoader workers, next to the model's step rate.

The videos are generated to look like Kinetics files to a decoder: 10 s, 25 fps, short side 256
(the common pre-resized Kinetics copies), H.264 High profile yuv420p with B-frames (x264 preset
medium, crf 23) and a keyframe every 2 s, so a random clip start costs a seek to the previous
keyframe and decoding forward from it, as with real YouTube clips. Content is a panning textured
background, a moving object and sensor noise, so inter-frame coding has real work to do.

Both readers decode with one thread (decord ``num_threads=1``, PyAV ``thread_count=1``): the
parallelism comes from DataLoader workers, as in training. The training transform is the
Kinetics recipe's (short side jittered in [256, 320], 224 crop, flip, normalise).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lw_lightning.data.kinetics import ClipTransform, KineticsDataset, VideoRecord
from lw_lightning.data.sampling import sample_train_clip
from lw_lightning.data.video_io import VideoReadError
from lw_lightning.models.vivit import ViViT, vivit_config

from .common import Case, Env, time_interleaved
from .config import DataSuite

# ------------------------------------------------------------------------------------------------
# realistic test videos
# ------------------------------------------------------------------------------------------------


def write_realistic_video(path: Path, seconds: float, fps: int, width: int, height: int, gop: int, seed: int) -> None:
    """One H.264 mp4 with camera pan, a moving object and noise (see module docstring)."""
    import av

    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    pan = rng.uniform(0.5, 2.0, size=2)  # pixels per frame
    big_h, big_w = height + int(abs(pan[0]) * n) + 8, width + int(abs(pan[1]) * n) + 8
    coarse = rng.integers(0, 256, size=(big_h // 24 + 2, big_w // 24 + 2, 3)).astype(np.float32)
    # smooth colour field: bilinear upsampling of a coarse random grid (photo-like low frequencies)
    tex = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(big_h, big_w), mode="bicubic")
    tex = tex[0].permute(1, 2, 0).clamp(0, 255).numpy()
    tex += rng.normal(0, 10, size=tex.shape).astype(np.float32)  # fine texture
    obj_colour = rng.integers(0, 256, size=3)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "23", "preset": "medium", "keyint_min": str(gop)}
        for t in range(n):
            y0, x0 = int(abs(pan[0]) * t), int(abs(pan[1]) * t)
            frame = tex[y0 : y0 + height, x0 : x0 + width].copy()
            cy = int(height / 2 + height / 3 * np.sin(t / fps * 1.3 + seed))
            cx = int((t / n) * width)
            frame[max(0, cy - 30) : cy + 30, max(0, cx - 30) : cx + 30] = obj_colour
            frame += rng.normal(0, 3, size=frame.shape).astype(np.float32)  # sensor noise
            vf = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")
            vf.pts = t
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(root: Path, suite: DataSuite, log: Callable[[str], None]) -> list[Path]:
    """Generate (or reuse) ``suite.videos`` files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    start = time.perf_counter()
    for i in range(suite.videos):
        path = root / f"video{i:03d}_{suite.width}x{suite.height}_{suite.fps}fps_{suite.seconds:g}s.mp4"
        if not path.is_file():
            write_realistic_video(path, suite.seconds, suite.fps, suite.width, suite.height, suite.gop, seed=i)
        paths.append(path)
    log(f"data: {len(paths)} videos ready in {time.perf_counter() - start:.1f} s under {root}")
    return paths


# ------------------------------------------------------------------------------------------------
# PyAV reader (decord's is lw_lightning.data.video_io.read_clip_frames)
# ------------------------------------------------------------------------------------------------


def read_clip_frames_pyav(path: str, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    """PyAV counterpart of :func:`read_clip_frames`: seek to the keyframe before the first wanted
    frame, decode forward to the last, convert only the wanted frames to RGB."""
    import av

    try:
        container = av.open(str(path))
    except Exception as err:
        raise VideoReadError(f"cannot open video {path}: {err}") from None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        rate = float(stream.average_rate or stream.guessed_rate)
        total = stream.frames or int(float(stream.duration * stream.time_base) * rate)
        idx = np.asarray(choose(total), dtype=np.int64)
        flat = idx.reshape(-1)
        unique, inverse = np.unique(flat, return_inverse=True)
        wanted = set(unique.tolist())
        start_time = stream.start_time or 0
        first_pts = int(unique[0] / rate / stream.time_base) + start_time
        container.seek(first_pts, stream=stream, backward=True, any_frame=False)
        got: dict[int, np.ndarray] = {}
        last = int(unique[-1])
        for frame in container.decode(stream):
            i = int(round(float((frame.pts - start_time) * stream.time_base) * rate))
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    finally:
        container.close()
    missing = wanted - set(got)
    if missing:
        raise VideoReadError(f"{path}: frames {sorted(missing)[:5]} not decoded")
    frames = np.stack([got[i] for i in unique.tolist()])
    return frames[inverse].reshape(*idx.shape, *frames.shape[1:])


class PyAVKineticsDataset(KineticsDataset):
    """The Kinetics training dataset with PyAV decoding in place of decord."""

    def _train_frames(self, rec: VideoRecord) -> np.ndarray:
        return read_clip_frames_pyav(rec.path, lambda n: sample_train_clip(n, self.num_frames, self.frame_stride, out_of_bounds=self.out_of_bounds))


def _dataset(reader: str, paths: list[Path], frames: int, stride: int, img_size: int, repeat: int) -> KineticsDataset:
    short = round(img_size * 256 / 224)
    transform = ClipTransform(img_size, [short, round(short * 1.25)], short, "scale_jitter", True, [0.5] * 3, [0.5] * 3)
    records = [VideoRecord(str(p), 0, p.stem) for p in paths] * repeat
    cls = KineticsDataset if reader == "decord" else PyAVKineticsDataset
    return cls(records, True, transform, frames, stride)


def measure_loader(reader: str, paths: list[Path], frames: int, stride: int, workers: int, suite: DataSuite) -> float:
    """Clips/s of a training DataLoader over ``suite.clips_per_run`` clips after one warm-up batch."""
    repeat = -(-(suite.clips_per_run + suite.batch_size * (workers + 1)) // len(paths)) + 1
    ds = _dataset(reader, paths, frames, stride, suite.img_size, repeat)
    loader = DataLoader(ds, batch_size=suite.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # workers started and their first batches decoded
    n, start = 0, time.perf_counter()
    while n < suite.clips_per_run:
        n += next(it)["video"].shape[0]
    elapsed = time.perf_counter() - start
    del it
    return n / elapsed


def run_data(suite: DataSuite, env: Env, log: Callable[[str], None] = print, out_dir: Path | None = None) -> list[dict[str, Any]]:
    root = Path(suite.video_dir) if suite.video_dir else (out_dir or Path("runs/bench")) / "videos"
    paths = make_videos(root, suite, log)
    rows: list[dict[str, Any]] = []
    for frames, stride in suite.clips:
        row: dict[str, Any] = dict(clip=f"{frames}x{suite.img_size}² (stride {stride})", frames=frames, stride=stride)
        for reader in suite.readers:
            for w in suite.workers:
                rates = [measure_loader(reader, paths, frames, stride, w, suite) for _ in range(2)]
                row[f"{reader}_w{w}"] = statistics.median(rates)
                log(f"data {frames}x{stride} {reader} workers={w}: {row[f'{reader}_w{w}']:.2f} clips/s")
        if suite.model_preset:
            row.update(_model_rate(suite, frames, env, log))
        rows.append(row)
    return rows


def _model_rate(suite: DataSuite, frames: int, env: Env, log: Callable[[str], None]) -> dict[str, Any]:
    """Training clips/s of the ViViT preset on clips of ``frames`` frames (forward+backward+SGD)."""
    torch.manual_seed(0)
    cfg = vivit_config(suite.model_preset, num_frames=frames)
    model = ViViT(cfg, 400).to(env.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    x = torch.randn(suite.model_batch, 3, frames, cfg.img_size, cfg.img_size, device=env.device)
    y = torch.randint(400, (suite.model_batch,), device=env.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with env.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    name = f"ViViT-{suite.model_preset} train {frames} frames b={suite.model_batch}"
    short = Env(env.device, env.dtype, warmup=1, repeats=suite.model_repeats)  # steps are long on CPU
    case = time_interleaved([Case(name, step, items=suite.model_batch)], short, log)[0]
    return {"model": f"ViViT-{suite.model_preset[0].upper()}/16x2", "model_clips_s": suite.model_batch / case.median if case.times else float("nan")}
