"""A tiny ImageNet copy in the real layouts (tests and smoke runs):
``python -m lw_lightning.data.imagenet --make-tiny DIR [--layout folders|kaggle|devkit]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .labels import NUM_CLASSES, canonical_wnids, default_class_names, write_devkit_meta

#: a few real wnids, spread over the index range (0, 1, 207, 999 ...)
TINY_WNIDS = ("n01440764", "n01443537", "n02099601", "n15075141")


def _write_image(path: Path, rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB", fmt: str = "JPEG") -> None:
    w, h = size
    arr = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)


def make_tiny(root: str | Path, layout: str = "folders", per_class: int = 4, val_per_class: int = 2, seed: int = 0) -> Path:
    """Write a small ImageNet copy in ``layout`` "folders", "kaggle" or "devkit" (flat val).

    Real wnids and file-name patterns; the first train image is CMYK and the second a PNG
    named ``.JPEG`` (both exist in the real train set); one image is grayscale.
    Returns the path to use as ``data.root``.
    """
    if layout not in ("folders", "kaggle", "devkit"):
        raise ValueError(f"layout must be folders, kaggle or devkit, got {layout!r}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    images = root / "ILSVRC" / "Data" / "CLS-LOC" if layout == "kaggle" else root
    wnids = canonical_wnids()
    sizes = [(500, 375), (333, 500), (400, 300), (500, 500)]
    k = 0
    for wnid in TINY_WNIDS:
        for n in range(per_class):
            mode, fmt = "RGB", "JPEG"
            if k == 0:
                mode = "CMYK"
            elif k == 1:
                fmt = "PNG"
            elif k == 2:
                mode = "L"
            _write_image(images / "train" / wnid / f"{wnid}_{1000 + n}.JPEG", rng, sizes[k % 4], mode, fmt)
            k += 1
    # val numbering interleaves classes, as in the real val set
    val = [(i + 1, wnid) for i, wnid in enumerate(w for _ in range(val_per_class) for w in TINY_WNIDS)]
    for number, wnid in val:
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        dest = images / "val" / (name if layout != "folders" else f"{wnid}/{name}")
        _write_image(dest, rng, sizes[number % 4])
    names = default_class_names()
    if layout == "kaggle":
        (root / "LOC_synset_mapping.txt").write_text(
            "".join(f"{w} {names[i]}\n" for i, w in enumerate(wnids))
        )
        rows = ["ImageId,PredictionString"] + [
            f"ILSVRC2012_val_{number:08d},{wnid} 10 20 200 220 {wnid} 5 5 100 90 " for number, wnid in val
        ]
        # rows of images this copy does not hold, as in a partial copy of the real file
        rows.append(f"ILSVRC2012_val_00049999,{wnids[500]} 1 2 3 4 ")
        (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    if layout == "devkit":
        # meta.mat order is not the sorted-wnid order: use a fixed shuffle of the 1000 leaves,
        # plus a few non-leaf synsets (num_children > 0) after them, as in the real file
        order = np.random.default_rng(1234).permutation(NUM_CLASSES)
        synsets: list[dict[str, Any]] = []
        for ilsvrc_id, cls in enumerate(order, start=1):
            synsets.append({
                "ILSVRC2012_ID": ilsvrc_id, "WNID": wnids[cls], "words": names[int(cls)],
                "gloss": "", "num_children": 0, "children": np.zeros((1, 0)), "wordnet_height": 0, "num_train_images": 1300,
            })
        for j in range(3):
            synsets.append({
                "ILSVRC2012_ID": NUM_CLASSES + 1 + j, "WNID": f"n0000000{j}", "words": f"group {j}", "gloss": "a group",
                "num_children": 2, "children": np.array([[1, 2]]), "wordnet_height": 3, "num_train_images": 0,
            })
        devkit = root / "ILSVRC2012_devkit_t12" / "data"
        devkit.mkdir(parents=True, exist_ok=True)
        write_devkit_meta(devkit / "meta.mat", synsets)
        wnid_to_id = {s["WNID"]: s["ILSVRC2012_ID"] for s in synsets}
        labels = dict(val)
        # the GT file covers the full 50,000 val images, also those this copy does not hold
        lines = [str(wnid_to_id[labels[n]] if n in labels else (n % NUM_CLASSES) + 1) for n in range(1, 50_001)]
        (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(lines) + "\n")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny ImageNet copy in the real layout")
    parser.add_argument("--make-tiny", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--layout", choices=["folders", "kaggle", "devkit"], default="folders")
    args = parser.parse_args(argv)
    root = make_tiny(args.make_tiny, args.layout)
    print(f"wrote a tiny ImageNet copy ({args.layout} layout) to {root}; use data.root={root}")
    return 0

