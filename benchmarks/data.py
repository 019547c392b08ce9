"""Kinetics clip loading: decord vs PyAV, 1..n DataLoader workers, next to the model's step rate.

The videos are generated to look like Kinetics files to a decoder: 10 s, 25 fps, short side 256
(the common pre-resized Kinetics copies), H.264 High profile yuv420p with B-frames (x264 preset
medium, crf 23) and a keyframe every 2 s, so a random clip start costs a seek to the previous
keyframe and decoding forward from it, as with real YouTube clips. Content is a panning textured
background, a moving object and sensor noise, so inter-frame coding has real work to do.

Both readers decode with one thread (decord ``num_threads=1``, PyAV ``thread_count=1``): the
parallelism comes from DataLoader workers, as in training. The workers run the Kinetics recipe's
worker half (short side jittered in [256, 320], 224 crop, uint8 out); its device half (flip,
colour jitter p=0.8, colour drop p=0.1, normalise) is timed with the model's training step.
``plain`` is the yardstick: decord alone (open, ``get_batch`` of the same frame indices, copy
out) in the same DataLoader workers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lw_lightning.data.kinetics import ClipTransform, KineticsDataset, VideoRecord
from lw_lightning.data.sampling import clip_indices, max_start
from lw_lightning.data.video_augment import VideoAugment
from lw_lightning.data.video_io import VideoReadError
from lw_lightning.data.workers import loader_worker_init
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


def read_clip_frames_pyav(path: str, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    """PyAV counterpart of :func:`read_clip_frames`: seek to the keyframe before the first wanted
    frame, decode forward to the last, convert only the wanted frames to RGB (at ``size`` when given)."""
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
        kw = {} if size is None else dict(height=size[0], width=size[1], interpolation="BICUBIC")
        for frame in container.decode(stream):
            i = int(round(float((frame.pts - start_time) * stream.time_base) * rate))
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24", **kw)
            if i >= last:
                break
    finally:
        container.close()
    missing = wanted - set(got)
    if missing:
        raise VideoReadError(f"{path}: frames {sorted(missing)[:5]} not decoded")
    frames = np.stack([got[i] for i in unique.tolist()])
    return frames[inverse].reshape(*idx.shape, *frames.shape[1:])


def fixed_clip(index: int, total: int, frames: int, stride: int) -> np.ndarray:
    """A training clip whose start depends only on the sample index: every reader decodes the same frames."""
    start = int(np.random.default_rng(index).integers(max_start(total, frames, stride) + 1))
    return clip_indices(total, start, frames, stride)


class BenchKineticsDataset(KineticsDataset):
    """The Kinetics training dataset (worker half of the pipeline) on :func:`fixed_clip` indices,
    decoding with decord (the default), torchcodec (``decoder="torchcodec"``) or PyAV (``reader="pyav"``)."""

    def __init__(self, *args, reader: str = "decord", **kw) -> None:
        super().__init__(*args, **kw)
        self.reader = reader

    def train_indices(self, index: int, total: int) -> np.ndarray:
        return fixed_clip(index, total, self.num_frames, self.frame_stride)

    def decode(self, path: str, choose: Callable[[int], np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
        if self.reader == "pyav":
            return read_clip_frames_pyav(path, choose, size)
        return super().decode(path, choose, size)


class PlainDecordDataset(Dataset):
    """The yardstick: decord alone on the same :func:`fixed_clip` indices (open a ``VideoReader``,
    ``get_batch``, copy out to numpy), with no sampling logic, resize or augmentation.

    ``crop=None`` returns only the frame count, so the loader moves no pixels: decoding alone.
    ``crop=s`` returns the centre ``s x s`` crop of the frames (uint8 ``[T, s, s, 3]``), so the
    loader moves as many bytes as the training pipeline's clips: decoding plus delivery.
    """

    def __init__(self, paths: list[str], frames: int, stride: int, crop: int | None = None) -> None:
        self.paths, self.frames, self.stride, self.crop = paths, frames, stride, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        import decord

        reader = decord.VideoReader(self.paths[index], ctx=decord.cpu(0), num_threads=1)
        # asnumpy(), as decord is used: the loader hands decord's buffer over without this copy (video_io._as_numpy)
        frames = reader.get_batch(fixed_clip(index, len(reader), self.frames, self.stride).tolist()).asnumpy()
        del reader
        if self.crop is None:
            return {"video": torch.tensor(frames.shape[0])}
        h, w, s = frames.shape[1], frames.shape[2], self.crop
        top, left = max(0, (h - s) // 2), max(0, (w - s) // 2)
        return {"video": torch.from_numpy(np.ascontiguousarray(frames[:, top : top + s, left : left + s]))}


class PlainTorchcodecDataset(PlainDecordDataset):
    """:class:`PlainDecordDataset` with torchcodec's CPU decoder (it needs the system's FFmpeg libraries):
    one FFmpeg thread, exact seeks, frames ``[T, H, W, 3]`` as decord gives them."""

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(self.paths[index], seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
        idx = fixed_clip(index, decoder.metadata.num_frames, self.frames, self.stride).tolist()
        frames = decoder.get_frames_at(idx).data
        return {"video": torch.tensor(frames.shape[0])}


def recipe_transforms(img_size: int, decoder_resize_ratio: float | None = 1.5) -> tuple[ClipTransform, VideoAugment]:
    """The Kinetics recipe's worker geometry and device augmentation (conf/data/kinetics400.yaml)."""
    short = round(img_size * 256 / 224)
    geometry = ClipTransform(
        img_size, [short, round(short * 1.25)], short, "scale_jitter", decoder_resize_ratio=decoder_resize_ratio
    )
    augment = VideoAugment(flip=True, color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob=0.8, grayscale_prob=0.1)
    return geometry, augment


def _dataset(reader: str, paths: list[Path], frames: int, stride: int, img_size: int, repeat: int) -> KineticsDataset:
    geometry, augment = recipe_transforms(img_size)
    records = [VideoRecord(str(p), 0, p.stem) for p in paths] * repeat
    decoder = "torchcodec" if reader == "torchcodec" else "decord"
    return BenchKineticsDataset(records, True, geometry, frames, stride, augment=augment, reader=reader, decoder=decoder)


def measure_loader(reader: str, paths: list[Path], frames: int, stride: int, workers: int, suite: DataSuite) -> float:
    """Clips/s of a training DataLoader over ``suite.clips_per_run`` clips after one warm-up batch."""
    repeat = -(-(suite.clips_per_run + suite.batch_size * (workers + 1)) // len(paths)) + 1
    if reader == "plain":
        ds: Dataset = PlainDecordDataset([str(p) for p in paths] * repeat, frames, stride)
    else:
        ds = _dataset(reader, paths, frames, stride, suite.img_size, repeat)
    loader = DataLoader(
        ds,
        batch_size=suite.batch_size,
        shuffle=False,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=loader_worker_init,  # the project's workers (freed memory kept for reuse)
    )
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
        cases = [(r, w) for r in suite.readers for w in suite.workers]
        rates: dict[str, list[float]] = {}
        for _ in range(suite.rounds):  # interleaved: a load change on a shared machine hits every case alike
            for reader, w in cases:
                rates.setdefault(f"{reader}_w{w}", []).append(measure_loader(reader, paths, frames, stride, w, suite))
        for reader, w in cases:
            key = f"{reader}_w{w}"
            row[key] = statistics.median(rates[key])
            row[key + "_all"] = rates[key]
            log(
                f"data {frames}x{stride} {reader} workers={w}: {row[key]:.2f} clips/s ({', '.join(f'{r:.2f}' for r in rates[key])})"
            )
        if suite.model_preset:
            row.update(_model_rate(suite, frames, env, log))
        rows.append(row)
    return rows


def _model_rate(suite: DataSuite, frames: int, env: Env, log: Callable[[str], None]) -> dict[str, Any]:
    """Training clips/s of the ViViT preset on clips of ``frames`` frames: the device half of the
    input pipeline (flip / colour jitter / normalise of a uint8 batch) + forward + backward + SGD."""
    torch.manual_seed(0)
    cfg = vivit_config(suite.model_preset, num_frames=frames)
    model = ViViT(cfg, 400).to(env.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    _, augment = recipe_transforms(cfg.img_size)
    clips = torch.randint(
        0, 256, (suite.model_batch, frames, cfg.img_size, cfg.img_size, 3), dtype=torch.uint8, device=env.device
    )
    params = augment.draw(suite.model_batch, torch.Generator().manual_seed(0))
    y = torch.randint(400, (suite.model_batch,), device=env.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        x = augment.apply(clips, params)
        with env.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    name = f"ViViT-{suite.model_preset} train {frames} frames b={suite.model_batch}"
    short = Env(env.device, env.dtype, warmup=1, repeats=suite.model_repeats)  # steps are long on CPU
    case = time_interleaved([Case(name, step, items=suite.model_batch)], short, log)[0]
    return {
        "model": f"ViViT-{suite.model_preset[0].upper()}/16x2",
        "model_clips_s": suite.model_batch / case.median if case.times else float("nan"),
    }
