"""Images/s of the ImageNet train pipeline (JPEG decode + DeiT augmentation) per DataLoader workers.

Writes a generated set of realistically sized JPEGs (ImageNet's typical 500x375 / 375x500 /
500x333 / 500x500, quality 90) in the class-folder layout, then times full passes of the
DataModule's training loader. Measures the loader alone (no model), so it is the ceiling the
input pipeline puts on training speed.

    python -m benchmarks.data_throughput --workers 1 2 --images 256   (from the repo root)
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
        root=str(root), image_size=image_size, batch_size=batch, num_workers=workers,
        pin_memory=False, persistent_workers=True, seed=0,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="generated JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the JPEGs (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        write_jpegs(root, args.images)
        print(f"{args.images} JPEGs, batch {args.batch_size}, {args.image_size}px, DeiT train transform")
        for w in args.workers:
            print(f"workers={w}: {measure(root, w, args.batch_size, args.image_size, args.epochs):.1f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
