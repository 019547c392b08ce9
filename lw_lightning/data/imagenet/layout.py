"""Where the splits and label files of one ImageNet copy are, and its (path, class index) samples."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError
from ..images import describe_dir, image_files
from .labels import read_devkit_labels, read_val_solution

WNID_RE = re.compile(r"^n\d{8}$")
VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})$")
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", "devkit/data", "ILSVRC2012_devkit_t12", "devkit", ".")
EXPECTED = (
    "expected ImageNet as <root>/train/<wnid>/*.JPEG + <root>/val/(<wnid>/)*.JPEG, "
    "or Kaggle <root>/ILSVRC/Data/CLS-LOC/{train,val} with <root>/LOC_val_solution.csv"
)


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


def list_samples(layout: ImageNetLayout, split: str, wnid_to_index: dict[str, int]) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) pairs of ``split`` ("train" or "val"), sorted by path, and the ids of
    the images its label file lists without a file (flat val only: class folders list nothing)."""
    folder = layout.train_dir if split == "train" else layout.val_dir
    if folder is None:
        raise ConfigError(f"data.root={layout.root}: no {split}/ folder ({EXPECTED})")

    def index_of(wnid: str, where: Path) -> int:
        if wnid not in wnid_to_index:
            raise ConfigError(f"{where}: '{wnid}' is not one of the 1000 ImageNet-1k wnids")
        return wnid_to_index[wnid]

    samples: list[tuple[Path, int]] = []
    missing: list[str] = []
    if split == "train" or not layout.val_flat:
        for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = index_of(d.name, d)
            samples.extend((f, label) for f in image_files(d))
    elif layout.val_solution is not None:
        solution = read_val_solution(layout.val_solution, wnid_to_index)
        for f in image_files(folder):
            if f.stem not in solution:
                raise ConfigError(f"{f}: no row for '{f.stem}' in {layout.val_solution}")
            samples.append((f, index_of(solution[f.stem], layout.val_solution)))
        held = {f.stem for f, _ in samples}
        missing = sorted(set(solution) - held)
    else:
        assert layout.devkit is not None
        gt = read_devkit_labels(*layout.devkit)
        for f in image_files(folder):
            m = VAL_NAME_RE.match(f.stem)
            if m is None or int(m.group(1)) not in gt:
                raise ConfigError(f"{f}: not an ILSVRC2012_val_<8 digits> file covered by {layout.devkit[0]}")
            samples.append((f, index_of(gt[int(m.group(1))], layout.devkit[1])))
        held = {f.stem for f, _ in samples}
        missing = [name for name in (f"ILSVRC2012_val_{n:08d}" for n in sorted(gt)) if name not in held]
    if not samples:
        raise ConfigError(f"{folder}: found 0 images ({EXPECTED})")
    return samples, missing
