"""Input-pipeline throughput per DataLoader worker: ImageNet images/s, or (``--video``) Kinetics clips/s.

Images: writes realistically sized JPEGs (ImageNet's typical 500x375 / 375x500 / 500x333 /
500x500, quality 90) in the class-folder layout, then times full passes of the DataModule's
training loader.

Video (``--video``): generates Kinetics-like H.264 files (``benchmarks.data``: pan, moving
object, noise, B-frames, a keyframe every ``--gop`` frames) and times, interleaved round by round
on the same frame indices and the same worker processes:

* ``plain``: decord alone (open a ``VideoReader``, ``get_batch``, ``asnumpy()``), nothing sent back;
* ``plain+crop``: the same, sending back the centre 224² crop: decoding plus delivering as many
  bytes as the training clips (collation into fresh shared memory, which every loader that
  returns pixels pays);
* ``loader``: the training loader's workers (decode, scale-jitter crop, uint8 out), as from the
  second epoch on: the frame sizes known, so a large source is decoded at the size it needs;
* with ``--stored-size``: the loader with the decoder's resizing off (``decoder_resize_ratio:
  null``), to see what decoding a large source at the needed size saves;
* ``old worker``: the worker transform before the device split (float resize of the whole frame,
  crop, flip, colour jitter p=0.8, colour drop p=0.1, normalise), for the before/after;
* with ``--prepared``: the same on a copy re-encoded by ``python -m lw_lightning.prep_videos``;
* with ``--plain-workers``: the loaders again in PyTorch's plain workers, without the project's
  worker set-up (``loader_worker_init``: freed memory kept for reuse), to see what that set-up saves;
* with ``--torchcodec``: torchcodec's CPU decoder alone, as ``plain`` (exact seeks, one FFmpeg
  thread; needs the system's FFmpeg libraries), and the loader with ``data.decoder=torchcodec``.

Two tables: clips/s per worker, and the workers' CPU time per clip (user + system, collation
included), which a busy machine disturbs much less than the rate.

Measures the loader alone (no model), so it is the ceiling the input pipeline puts on training.

    python -m benchmarks.data_throughput --workers 1 2 --images 256   (from the repo root)
    python -m benchmarks.data_throughput --video --size 320x240 --clips 16x4 32x2 --workers 1 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lw_lightning.data.imagenet import TINY_WNIDS, ImageNetDataModule

SIZES = [(500, 375), (375, 500), (500, 333), (500, 500)]  # (W, H)


def write_jpegs(root: Path, n: int, seed: int = 0) -> None:
    """``n`` photo-like JPEGs (smooth colour fields plus noise: compress like real photos)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        wnid = TINY_WNIDS[i % len(TINY_WNIDS)]
        w, h = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, size=(h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
        img = np.clip(img + rng.normal(0, 12, size=img.shape), 0, 255).astype(np.uint8)
        dest = root / "train" / wnid / f"{wnid}_{i}.JPEG"
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dest, quality=90)
    # one val image per class so the layout is complete (the val split is not timed)
    first = next((root / "train").rglob("*.JPEG")).read_bytes()
    for k, wnid in enumerate(TINY_WNIDS, start=1):
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG").write_bytes(first)


def measure(root: Path, workers: int, batch: int, image_size: int, epochs: int) -> float:
    """Images/s over ``epochs`` passes, after one untimed warm-up batch (worker start-up)."""
    dm = ImageNetDataModule(
        root=str(root),
        image_size=image_size,
        batch_size=batch,
        num_workers=workers,
        pin_memory=False,
        persistent_workers=True,
        seed=0,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # warm-up: forks the workers and fills their prefetch queues
    n, start = 0, time.perf_counter()
    for b in it:
        n += b["image"].shape[0]
    for _ in range(epochs - 1):
        for b in loader:
            n += b["image"].shape[0]
    return n / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------
# video
# ------------------------------------------------------------------------------------------------


def _legacy_dataset():
    """The Kinetics training item as workers computed it before the device split (for comparison)."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms import v2

    from benchmarks.data import BenchKineticsDataset
    from lw_lightning.data.kinetics import short_side_size

    class LegacyWorkerDataset(BenchKineticsDataset):
        color = v2.Compose([v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.1)])

        def __getitem__(self, index: int) -> dict:
            frames = self.decode(self.records[index].path, lambda n: self.train_indices(index, n), None)
            x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            lo, hi = self.transform.train_short_side
            s = self.transform.img_size
            size = short_side_size(*x.shape[-2:], int(torch.randint(lo, hi + 1, (1,))))
            x = (
                F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
                .round_()
                .clamp_(0, 255)
                .byte()
            )
            top, left = int(torch.randint(size[0] - s + 1, (1,))), int(torch.randint(size[1] - s + 1, (1,)))
            x = x[..., top : top + s, left : left + s]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            x = self.color(x.contiguous())
            return {"video": (x.permute(1, 0, 2, 3).float() / 255.0 - 0.5) / 0.5}

    return LegacyWorkerDataset


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes ``pids`` so far (Linux /proc)."""
    import os

    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def measure_video(
    kind: str, paths: list[Path], frames: int, stride: int, workers: int, clips: int, batch: int
) -> tuple[float, float]:
    """(clips/s, worker CPU ms per clip) of one loader kind over ``clips`` clips after a warm-up
    batch (same indices for every kind). The CPU time is all the workers' user + system time,
    collation into shared memory included: on a shared machine it moves far less with the load
    than the rate does."""
    import torch
    from torch.utils.data import DataLoader

    from benchmarks.data import BenchKineticsDataset, PlainDecordDataset, PlainTorchcodecDataset, recipe_transforms
    from lw_lightning.data.kinetics import VideoRecord
    from lw_lightning.data.video_io import read_frames
    from lw_lightning.data.workers import loader_worker_init

    project_workers = not kind.endswith(PLAIN_WORKERS)
    kind = kind.removesuffix(PLAIN_WORKERS)
    repeat = -(-(clips + batch * (workers + 2)) // len(paths)) + 1
    if kind == "torchcodec":
        ds = PlainTorchcodecDataset([str(p) for p in paths] * repeat, frames, stride)
    elif kind.startswith("plain"):
        ds = PlainDecordDataset([str(p) for p in paths] * repeat, frames, stride, crop=224 if kind == "plain+crop" else None)
    else:
        geometry, augment = recipe_transforms(224, decoder_resize_ratio=None if kind == STORED_SIZE else 1.5)
        cls = _legacy_dataset() if kind == "old worker" else BenchKineticsDataset
        records = [VideoRecord(str(p), 0, p.stem) for p in paths] * repeat
        decoder = "torchcodec" if kind == LOADER_TORCHCODEC else "decord"
        ds = cls(records, True, geometry, frames, stride, augment=augment, decoder=decoder)
        # the loader from its second epoch on: every record's frame size known (in the first epoch, each
        # file's first decode is at its stored size); the records repeat the files, so the table is filled here
        sizes = torch.tensor([read_frames(p, [0]).shape[1:3] for p in paths], dtype=torch.int32)
        ds.sizes.copy_(sizes.repeat(repeat, 1))
    # the project's worker set-up for every kind (freed memory kept for reuse: data/workers.py), or
    # PyTorch's plain workers (the kinds --plain-workers adds)
    loader = DataLoader(
        ds,
        batch_size=batch,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=loader_worker_init if project_workers else None,
    )
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]  # type: ignore[attr-defined]
    n, start, cpu = 0, time.perf_counter(), _cpu_seconds(pids)
    while n < clips:
        n += next(it)["video"].shape[0]
    rate, cpu_ms = n / (time.perf_counter() - start), (_cpu_seconds(pids) - cpu) / n * 1000
    del it
    return rate, cpu_ms


#: the loader with the decoder's resizing switched off (``decoder_resize_ratio: null``)
STORED_SIZE = "loader, decoded at stored size"
#: the loader with ``data.decoder=torchcodec``
LOADER_TORCHCODEC = "loader, torchcodec"
#: suffix of a loader kind run in PyTorch's plain workers (no ``loader_worker_init``)
PLAIN_WORKERS = " (plain workers)"


def video_main(args: argparse.Namespace) -> int:
    import os
    import statistics

    from benchmarks.config import DataSuite
    from benchmarks.data import make_videos
    from lw_lightning.data.video_io import torchcodec_problem
    from lw_lightning.prep_videos import PrepOptions, prepare_tree

    if args.torchcodec and (problem := torchcodec_problem()):
        print(f"--torchcodec: {problem}")
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    clips = [tuple(int(v) for v in c.lower().split("x")) for c in args.clips]
    root = args.dir or Path(tempfile.mkdtemp(prefix="video_throughput_"))
    suite = DataSuite(videos=args.videos, seconds=args.seconds, fps=25, width=width, height=height, gop=args.gop)
    sets = {"raw": make_videos(root / "raw", suite, print)}
    if args.prepared:
        prep = prepare_tree(
            root / "raw", root / "prepared", PrepOptions(args.prep_short_side, args.prep_keyint), workers=1, progress=False
        )
        if prep.failed:
            print(f"prep failed on {prep.failed}")
            return 1
        sets["prepared"] = [root / "prepared" / p.name for p in sets["raw"]]
    kinds = (
        ["plain", "plain+crop", "loader"]
        + ([STORED_SIZE] if args.stored_size else [])
        + ([] if args.no_old else ["old worker"])
        + (["torchcodec", LOADER_TORCHCODEC] if args.torchcodec else [])
    )
    if args.plain_workers:  # the loaders again in PyTorch's plain workers, interleaved with the rest
        kinds += [k + PLAIN_WORKERS for k in ("loader", LOADER_TORCHCODEC) if k in kinds]
    cases = [(name, f, st, kind, w) for (f, st) in clips for name in sets for kind in kinds for w in args.workers]
    rates: dict[tuple, list[float]] = {c: [] for c in cases}
    cpu: dict[tuple, list[float]] = {c: [] for c in cases}
    for r in range(args.rounds):  # interleaved: load changes on a shared machine hit every case alike
        for c in cases:
            name, f, st, kind, w = c
            rate, cpu_ms = measure_video(kind, sets[name], f, st, w, args.clips_per_run, args.batch_size)
            rates[c].append(rate)
            cpu[c].append(cpu_ms)
            print(f"round {r}: {name} {f}x{st} {kind} w={w}: {rate:.2f} clips/s, worker CPU {cpu_ms:.1f} ms/clip", flush=True)
    load = os.getloadavg()
    lines = [
        f"{args.videos} generated {args.seconds:g}-s videos, {width}x{height} at 25 fps, H.264 (x264 medium, crf 23, B-frames), "
        f"keyframe every {args.gop} frames"
        + (f"; prepared: short side {args.prep_short_side}, keyframe every {args.prep_keyint}" if args.prepared else "")
        + f". Medians of {args.rounds} interleaved rounds of {args.clips_per_run} clips (batch {args.batch_size}); "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores.",
    ]
    # the loader's speed relative to each yardstick: rate / rate, or CPU time / CPU time inverted
    versus = [k for k in kinds if k not in ("loader", "torchcodec", LOADER_TORCHCODEC, LOADER_TORCHCODEC + PLAIN_WORKERS)]
    for title, data, unit, faster in (
        ("clips/s per worker", rates, "clips/s", lambda loader, other: loader / other),
        # CPU time is counted in clock ticks (10 ms): a tiny run may count none
        ("worker CPU per clip", cpu, "ms", lambda loader, other: other / loader if loader else float("nan")),
    ):
        header = ["files", "clip", "workers"] + [f"{k} ({unit})" for k in kinds] + [f"loader / {k}" for k in versus]
        pairs = (
            [("torchcodec", "plain"), (LOADER_TORCHCODEC, "plain"), (LOADER_TORCHCODEC, "torchcodec")] if args.torchcodec else []
        )
        pairs += [(LOADER_TORCHCODEC, LOADER_TORCHCODEC + PLAIN_WORKERS)] if LOADER_TORCHCODEC + PLAIN_WORKERS in kinds else []
        header += [f"{a} / {b}" for a, b in pairs]
        lines += ["", f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for f, st in clips:
            for name in sets:
                for w in args.workers:
                    per_worker = w if data is rates else 1
                    med = {k: statistics.median(data[(name, f, st, k, w)]) / per_worker for k in kinds}
                    row = [name, f"{f}x{st}", str(w)] + [f"{med[k]:.2f}" if data is rates else f"{med[k]:.1f}" for k in kinds]
                    row += [f"{faster(med['loader'], med[k]):.2f}" for k in versus]
                    row += [f"{faster(med[a], med[b]):.2f}" for a, b in pairs]
                    lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", action="store_true", help="Kinetics clips instead of ImageNet images")
    parser.add_argument("--videos", type=int, default=4, help="(video) generated videos")
    parser.add_argument("--seconds", type=float, default=10.0, help="(video) length of each video")
    parser.add_argument("--size", default="320x240", help="(video) WxH of the generated videos")
    parser.add_argument("--gop", type=int, default=50, help="(video) keyframe interval of the generated videos")
    parser.add_argument("--clips", nargs="+", default=["16x4", "32x2"], help="(video) FRAMESxSTRIDE clip shapes")
    parser.add_argument("--rounds", type=int, default=3, help="(video) interleaved rounds")
    parser.add_argument("--clips-per-run", type=int, default=16, help="(video) clips timed per measurement")
    parser.add_argument("--prepared", action="store_true", help="(video) also time a copy made by lw_lightning.prep_videos")
    parser.add_argument("--prep-short-side", type=int, default=320)
    parser.add_argument("--prep-keyint", type=int, default=16)
    parser.add_argument("--no-old", action="store_true", help="(video) skip the pre-split worker transform")
    parser.add_argument(
        "--torchcodec",
        action="store_true",
        help="(video) also torchcodec alone and the loader with it (needs the system's FFmpeg libraries)",
    )
    parser.add_argument(
        "--stored-size",
        action="store_true",
        help="(video) also the loader with decoder resizing off (decoder_resize_ratio: null)",
    )
    parser.add_argument(
        "--plain-workers",
        action="store_true",
        help="(video) also the loaders in PyTorch's plain workers (glibc's default malloc: freed memory given back)",
    )
    parser.add_argument("--out", type=Path, default=None, help="(video) also write the markdown table here")
    parser.add_argument("--images", type=int, default=256, help="generated JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (images) / 4 (video)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the JPEGs (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.video:
        args.batch_size = args.batch_size or 4
        return video_main(args)
    args.batch_size = args.batch_size or 32
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        write_jpegs(root, args.images)
        print(f"{args.images} JPEGs, batch {args.batch_size}, {args.image_size}px, DeiT train transform")
        for w in args.workers:
            print(f"workers={w}: {measure(root, w, args.batch_size, args.image_size, args.epochs):.1f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
