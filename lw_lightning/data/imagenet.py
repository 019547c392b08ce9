"""ImageNet-1k (ILSVRC2012-CLS) in the layouts people actually have on disk.

Supported (detected in this order):

* Kaggle ``imagenet-object-localization-challenge``: ``root/ILSVRC/Data/CLS-LOC/{train,val}``
  with ``root/LOC_synset_mapping.txt`` and a flat ``val/`` labelled by ``root/LOC_val_solution.csv``;
* class folders: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``;
* class-folder train with a *flat* ``root/val/ILSVRC2012_val_*.JPEG``, labelled by
  ``LOC_val_solution.csv`` or by the devkit (``ILSVRC2012_validation_ground_truth.txt`` +
  ``meta.mat``, e.g. in ``root/ILSVRC2012_devkit_t12/data/``).

Class index = position of the wnid among the sorted 1000 ImageNet-1k wnids (timm ships the
list), whatever subset of folders a copy holds: a 3-class test copy keeps the real indices and
``num_classes`` stays 1000. The devkit ground truth holds ILSVRC2012_IDs in ``meta.mat`` order,
which is *not* the sorted order; IDs are mapped through ``meta.mat``. Each val image is labelled
by the number in its file name, not by its position among the files present.

The val split serves as ``val``, ``test`` and ``predict`` (ImageNet's test labels are not public).
Run ``python -m lw_lightning.data.imagenet --make-tiny DIR`` to write a small copy.
"""

from __future__ import annotations

import argparse
import csv
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import ImageNetInfo, Mixup
from torch.utils.data import Dataset

from ..errors import ConfigError
from .base import BaseDataModule
from .images import SkippingDataset, describe_dir, image_files, load_rgb, report_skipped
from .transforms import imagenet_eval_transform, imagenet_train_transform

log = logging.getLogger(__name__)

NUM_CLASSES = 1000
WNID_RE = re.compile(r"^n\d{8}$")
VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})$")
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", "devkit/data", "ILSVRC2012_devkit_t12", "devkit", ".")
EXPECTED = (
    "expected ImageNet as <root>/train/<wnid>/*.JPEG + <root>/val/(<wnid>/)*.JPEG, "
    "or Kaggle <root>/ILSVRC/Data/CLS-LOC/{train,val} with <root>/LOC_val_solution.csv"
)


@functools.lru_cache(maxsize=1)
def _info() -> ImageNetInfo:
    return ImageNetInfo("imagenet-1k")


def canonical_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in sorted order (index = class index)."""
    wnids = list(_info().label_names())
    assert len(wnids) == NUM_CLASSES and wnids == sorted(wnids)
    return wnids


def default_class_names() -> list[str]:
    """Class names from timm's lemma table (used when no LOC_synset_mapping.txt is present)."""
    return [_info().index_to_description(i) for i in range(NUM_CLASSES)]


def read_synset_mapping(path: Path) -> tuple[list[str], list[str]]:
    """``LOC_synset_mapping.txt``: lines ``n01440764 tench, Tinca tinca`` -> (wnids, names)."""
    wnids, names = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            wnids.append(wnid)
            names.append(name.strip())
    return wnids, names


def read_val_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` -> {image id: wnid}; the label is the first token of the boxes."""
    out = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: expected the header 'ImageId,PredictionString', got {reader.fieldnames}")
        for row in reader:
            tokens = row["PredictionString"].split()
            if tokens:
                out[row["ImageId"].strip()] = tokens[0]
    return out


#: fields of the devkit's ``synsets`` struct array, in the file's order
SYNSET_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images")


def read_devkit_meta(meta_file: Path) -> dict[int, str]:
    """``meta.mat`` -> {ILSVRC2012_ID: wnid} of the 1000 leaf synsets (``num_children == 0``).

    The file holds one struct array ``synsets`` (1860 rows: the 1000 classes, then the WordNet
    groups above them), read with ``scipy.io.loadmat`` as torchvision's ImageNet does.
    """
    import scipy.io  # only the devkit layout needs it

    try:
        mat = scipy.io.loadmat(meta_file, squeeze_me=True)
    except (scipy.io.matlab.MatReadError, ValueError, NotImplementedError, OSError) as err:
        raise ConfigError(f"{meta_file}: not a readable MAT-file ({str(err).splitlines()[0]}); expected the ILSVRC2012 devkit meta.mat") from None
    synsets = mat.get("synsets")
    names = getattr(getattr(synsets, "dtype", None), "names", None) or ()
    if not {"ILSVRC2012_ID", "WNID", "num_children"} <= set(names):
        raise ConfigError(f"{meta_file}: no 'synsets' struct array with ILSVRC2012_ID, WNID, num_children (is this the ILSVRC2012 devkit meta.mat?)")
    rows = np.atleast_1d(synsets)
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in rows if int(s["num_children"]) == 0}


def write_devkit_meta(meta_file: Path, synsets: Sequence[dict[str, Any]]) -> None:
    """Write ``synsets`` (dicts with :data:`SYNSET_FIELDS`) as the devkit does: an N×1 struct
    array, numbers as MATLAB doubles, compressed (MATLAB's default since v7)."""
    import scipy.io

    table = np.empty((len(synsets), 1), dtype=[(f, object) for f in SYNSET_FIELDS])
    for i, synset in enumerate(synsets):
        for field in SYNSET_FIELDS:
            value = synset[field]
            table[i, 0][field] = value if isinstance(value, str) else np.atleast_2d(np.asarray(value, dtype=np.float64))
    scipy.io.savemat(meta_file, {"synsets": table}, do_compression=True)


def read_devkit_labels(gt_file: Path, meta_file: Path) -> dict[int, str]:
    """Devkit ground truth -> {val image number (1-based): wnid}, IDs mapped through meta.mat."""
    id_to_wnid = read_devkit_meta(meta_file)
    out = {}
    for n, line in enumerate(gt_file.read_text().split(), start=1):
        ilsvrc_id = int(line)
        if ilsvrc_id not in id_to_wnid:
            raise ConfigError(f"{gt_file}: line {n} holds ILSVRC2012_ID {ilsvrc_id}, which {meta_file} does not define")
        out[n] = id_to_wnid[ilsvrc_id]
    return out


@dataclass
class ImageNetLayout:
    """Where the splits and label files of one ImageNet copy are."""

    root: Path
    train_dir: Path | None
    val_dir: Path | None
    val_flat: bool
    synset_mapping: Path | None
    val_solution: Path | None
    devkit: tuple[Path, Path] | None  # (ground truth txt, meta.mat)


def _first_file(name: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def _has_class_dirs(folder: Path) -> bool:
    return any(p.is_dir() and WNID_RE.match(p.name) for p in folder.iterdir())


def find_layout(root: str | Path) -> ImageNetLayout:
    """Detect the layout under ``root`` or raise :class:`ConfigError` naming what was found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root={root}: {EXPECTED}; found {describe_dir(root)}")
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    images = kaggle if kaggle.is_dir() else root
    train_dir = images / "train" if (images / "train").is_dir() else None
    val_dir = images / "val" if (images / "val").is_dir() else None
    if train_dir is None and val_dir is None:
        raise ConfigError(f"data.root={root}: {EXPECTED}; found {describe_dir(root)}")
    label_dirs = [root, images] + [root / d for d in DEVKIT_DIRS]
    layout = ImageNetLayout(
        root=root, train_dir=train_dir, val_dir=val_dir, val_flat=False,
        synset_mapping=_first_file("LOC_synset_mapping.txt", label_dirs),
        val_solution=_first_file("LOC_val_solution.csv", label_dirs), devkit=None,
    )
    if train_dir is not None and not _has_class_dirs(train_dir):
        raise ConfigError(f"{train_dir}: expected class folders <wnid>/ (e.g. n01440764/); found {describe_dir(train_dir)}")
    if val_dir is not None:
        loose = image_files(val_dir)
        folders = _has_class_dirs(val_dir)
        if loose and folders:
            raise ConfigError(f"{val_dir} holds both class folders and loose images; keep one layout")
        layout.val_flat = bool(loose)
        if layout.val_flat and layout.val_solution is None:
            gt = _first_file("ILSVRC2012_validation_ground_truth.txt", label_dirs)
            meta = _first_file("meta.mat", label_dirs)
            if gt is None or meta is None:
                raise ConfigError(
                    f"{val_dir} is flat (no class folders) and no labels were found: put LOC_val_solution.csv in "
                    f"{root}, or the devkit (ILSVRC2012_validation_ground_truth.txt + meta.mat) in "
                    f"{root}/ILSVRC2012_devkit_t12/data/"
                )
            layout.devkit = (gt, meta)
        elif not loose and not folders:
            raise ConfigError(f"{val_dir}: expected class folders <wnid>/ or ILSVRC2012_val_*.JPEG files; found {describe_dir(val_dir)}")
    return layout


def list_samples(layout: ImageNetLayout, split: str, wnid_to_index: dict[str, int]) -> list[tuple[Path, int]]:
    """(path, class index) pairs of ``split`` ("train" or "val"), sorted by path."""
    folder = layout.train_dir if split == "train" else layout.val_dir
    if folder is None:
        raise ConfigError(f"data.root={layout.root}: no {split}/ folder ({EXPECTED})")

    def index_of(wnid: str, where: Path) -> int:
        if wnid not in wnid_to_index:
            raise ConfigError(f"{where}: '{wnid}' is not one of the 1000 ImageNet-1k wnids")
        return wnid_to_index[wnid]

    samples: list[tuple[Path, int]] = []
    if split == "train" or not layout.val_flat:
        for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = index_of(d.name, d)
            samples.extend((f, label) for f in image_files(d))
    elif layout.val_solution is not None:
        solution = read_val_solution(layout.val_solution)
        for f in image_files(folder):
            if f.stem not in solution:
                raise ConfigError(f"{f}: no row for '{f.stem}' in {layout.val_solution}")
            samples.append((f, index_of(solution[f.stem], layout.val_solution)))
    else:
        assert layout.devkit is not None
        gt = read_devkit_labels(*layout.devkit)
        for f in image_files(folder):
            m = VAL_NAME_RE.match(f.stem)
            if m is None or int(m.group(1)) not in gt:
                raise ConfigError(f"{f}: not an ILSVRC2012_val_<8 digits> file covered by {layout.devkit[0]}")
            samples.append((f, index_of(gt[int(m.group(1))], layout.devkit[1])))
    if not samples:
        raise ConfigError(f"{folder}: found 0 images ({EXPECTED})")
    return samples


class ImageNetDataset(SkippingDataset):
    """(path, label) samples decoded with PIL ``convert('RGB')`` and a PIL-input transform."""

    def __init__(
        self, samples: list[tuple[Path, int]], transform: Any, train: bool, seed: int = 0, max_retries: int = 10,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(train, seed, max_retries, root)
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        return self.samples[index][0]

    def _sample(self, index: int, image: Image.Image) -> dict[str, Any]:
        return {"image": self.transform(image), "label": torch.tensor(self.samples[index][1]), "index": torch.tensor(index)}

    def load(self, index: int) -> dict[str, Any]:
        return self._sample(index, load_rgb(self.image_path(index)))

    def placeholder(self, index: int, size: tuple[int, int]) -> dict[str, Any]:
        return self._sample(index, Image.new("RGB", size))


class ImageNetDataModule(BaseDataModule):
    """ImageNet-1k classification (1000 classes), DeiT-style augmentation.

    Args:
        root: dataset root in one of the layouts of the module docstring.
        image_size: train crop / eval size: side or [H, W].
        crop_pct: eval resize = size / crop_pct, then center crop.
        auto_augment: timm RandAugment string; null disables it.
        re_prob: RandomErasing probability.
        mixup / cutmix: Beta alphas; either > 0 turns on timm Mixup on training batches (adds a
            soft ``target`` (B, 1000); the per-device batch must be even).
        label_smoothing: folded into the Mixup soft targets.
        repeated_aug: repeated augmentation (DeiT's RASampler uses 3): each image of the epoch's
            order is drawn this many times in a row, on different ranks, with its own augmentation;
            an epoch keeps its length and so sees 1/repeated_aug of the images. 1: off.
        max_retries: unreadable training images replaced in a row before giving up.
    """

    def __init__(
        self,
        root: str = "data/imagenet",
        image_size: int | list[int] = 224,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        re_prob: float = 0.25,
        scale: list[float] | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        repeated_aug: int = 1,
        max_retries: int = 10,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        self.root = root
        self.image_size = image_size
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.auto_augment = auto_augment
        self.re_prob = re_prob
        self.scale = tuple(scale) if scale is not None else (0.08, 1.0)
        self.max_retries = max_retries
        if repeated_aug < 1:
            raise ConfigError(f"data.repeated_aug must be >= 1, got {repeated_aug}")
        self.repeated_aug = repeated_aug
        self.mixup_fn: Mixup | None = None
        if mixup > 0 or cutmix > 0:
            self.mixup_fn = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, switch_prob=mixup_switch_prob,
                mode="batch", label_smoothing=label_smoothing, num_classes=NUM_CLASSES,
            )
        self.wnids = canonical_wnids()
        self.num_classes = NUM_CLASSES
        self.class_names = default_class_names()
        self._layout: ImageNetLayout | None = None

    def layout(self) -> ImageNetLayout:
        if self._layout is None:
            self._layout = find_layout(self.root)
            if self._layout.synset_mapping is not None:
                wnids, names = read_synset_mapping(self._layout.synset_mapping)
                if wnids != self.wnids:
                    raise ConfigError(f"{self._layout.synset_mapping}: does not list the 1000 ImageNet-1k wnids in sorted order")
                self.class_names = names
        return self._layout

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.mixup_fn is not None and self.batch_size_per_device % 2:
            raise ConfigError(f"mixup/cutmix need an even per-device batch; got {self.batch_size_per_device}")

    def build_dataset(self, split: str) -> Dataset:
        wnid_to_index = {w: i for i, w in enumerate(self.wnids)}
        samples = list_samples(self.layout(), "train" if split == "train" else "val", wnid_to_index)
        if split == "train":
            transform = imagenet_train_transform(
                self.image_size, self.auto_augment, self.re_prob, self.scale, interpolation=self.interpolation
            )
        else:
            transform = imagenet_eval_transform(self.image_size, self.crop_pct, self.interpolation)
        return ImageNetDataset(
            samples, transform, train=split == "train", seed=self.seed, max_retries=self.max_retries, root=self.layout().root
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Mixup acts on whole training batches, on the device; evaluation is never mixed
        trainer = self.trainer
        if self.mixup_fn is not None and trainer is not None and trainer.training:
            batch["image"], batch["target"] = self.mixup_fn(batch["image"], batch["label"])
        return batch

    def teardown(self, stage: str | None = None) -> None:
        report_skipped(self.datasets.values())


# ------------------------------------------------------------------------------------------
# tiny copy (tests and smoke runs)
# ------------------------------------------------------------------------------------------

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


if __name__ == "__main__":
    raise SystemExit(main())
