"""Who should scale a large source, the decoder or the worker? CPU time per training clip and per
evaluation item, in one process, for each decoder with the decoder's resize on (``decoder_resize_ratio:
1.5``) and off (decoded at the stored size; the worker resizes only the crop box, or the whole frame
for evaluation's three crops).

Why torchcodec decodes at the stored size (``KineticsDataset``): its ``Resize`` transform is slower
than the worker's resize, while decord's scale filter is faster (docs/video.md).

    python -m benchmarks.decoder_resize --size 1280x720 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.config import DataSuite
from benchmarks.data import fixed_clip, make_videos, recipe_transforms
from lw_lightning.data.sampling import sample_test_clips
from lw_lightning.data.video_io import read_clip_frames, torchcodec_problem


def clip_ms(paths: list[Path], decoder: str, ratio: float | None, frames: int, stride: int, clips: int, train: bool) -> float:
    """Mean CPU ms of ``clips`` training clips (decode + crop) or evaluation items (2 clips x 3 crops)."""
    geometry, _ = recipe_transforms(224, decoder_resize_ratio=ratio)
    h, w = read_clip_frames(paths[0], lambda n: np.array([0])).shape[1:3]
    start = time.process_time()
    for i in range(clips):
        path = paths[i % len(paths)]
        torch.manual_seed(i)  # the same crops for every case
        if train:
            plan = geometry.train_plan(h, w)
            got = read_clip_frames(path, lambda n, i=i: fixed_clip(i, n, frames, stride), plan.decode_size, decoder)
            geometry.apply(got, plan)
        else:
            size = geometry.eval_decode_size(h, w)
            got = read_clip_frames(path, lambda n: sample_test_clips(n, frames, stride, 2, "loop"), size, decoder)
            geometry.eval(got, 3)
    return (time.process_time() - start) / clips * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WxH of the generated videos")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--gop", type=int, default=50)
    parser.add_argument("--clip", default="32x2", help="FRAMESxSTRIDE")
    parser.add_argument("--clips", type=int, default=8, help="clips (or evaluation items) per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown")
    parser.add_argument("--dir", type=Path, default=None, help="where the videos are written (reused when present)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (a test) keeps its threads


def _run(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames, stride = (int(v) for v in args.clip.lower().split("x"))
    root = args.dir or Path(tempfile.mkdtemp(prefix="decoder_resize_"))
    suite = DataSuite(videos=args.videos, seconds=args.seconds, fps=25, width=width, height=height, gop=args.gop)
    paths = make_videos(root / "raw", suite, print)
    decoders = ["decord"] + ([] if torchcodec_problem() else ["torchcodec"])
    cases = [(d, r, t) for t in (True, False) for d in decoders for r in (1.5, None)]
    ms: dict[tuple, list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):  # interleaved: load changes hit every case alike
        for c in cases:
            ms[c].append(clip_ms(paths, c[0], c[1], frames, stride, args.clips, c[2]))
    print(f"\n{width}x{height}, {args.clip} clips, CPU ms (one thread), medians of {args.rounds} rounds of {args.clips}\n")
    print("| decoder | item | decoder resizes (ms) | stored size, worker resizes (ms) | decoder resize / stored size |")
    print("|---|---|---|---|---|")
    for t in (True, False):
        for d in decoders:
            on, off = statistics.median(ms[(d, 1.5, t)]), statistics.median(ms[(d, None, t)])
            item = "training clip" if t else "eval item (2 clips x 3 crops)"
            print(f"| {d} | {item} | {on:.0f} | {off:.0f} | {on / off:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
