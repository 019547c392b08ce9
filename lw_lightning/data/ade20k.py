"""ADE20K scene parsing (the ``ADEChallengeData2016`` release: 150 classes).

Layout (``data.root`` is the ``ADEChallengeData2016`` folder or its parent)::

    images/{training,validation}/ADE_{train,val}_<8 digits>.jpg
    annotations/{training,validation}/ADE_{train,val}_<8 digits>.png   (same stem)
    objectInfo150.txt                                                  (class names)

Annotations are single-channel PNGs with 0 = "other" and 1..150 the classes. The dataset applies
mmsegmentation's ``reduce_zero_label`` here and only here (0 -> 255 ignore, k -> k-1), so the
transforms and the model see classes 0..149 and ignore 255.

Batches: ``image`` (B,3,H,W) normalised; ``mask`` (B,H',W') long, 255 = ignore; ``index``;
``image_size`` (B,2) the valid (h, w) of each image inside the padded batch; ``label_size``
(B,2) the valid (h, w) of each mask. In training both equal the crop. In evaluation the mask is
the *original-resolution* label map (padded with 255 to the batch's largest) and ``masks`` lists
the unpadded labels, so a module crops its logits to ``image_size``, resizes them (bilinear) to
``label_size`` and scores them against ``masks[i]``: the mIoU of the benchmark protocol.

The validation split serves as ``val``, ``test`` and ``predict``. ``predict`` writes masks the way
the annotations are stored (class c as c + 1, :attr:`ADE20KDataModule.label_offset`) with the
benchmark palette, at the original size: the challenge's submission format.
Run ``python -m lw_lightning.data.ade20k --make-tiny DIR`` to write a small copy.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError, UnreadableImageError
from .base import BaseDataModule
from .images import SkippingDataset, describe_dir, load_upright, report_skipped
from .text import read_text
from .transforms import IGNORE_INDEX, ade20k_eval_transform, ade20k_train_transform

log = logging.getLogger(__name__)

NUM_CLASSES = 150
FOLDER = "ADEChallengeData2016"
SPLIT_DIRS = {"train": "training", "val": "validation", "test": "validation", "predict": "validation"}
EXPECTED = (
    "expected ADEChallengeData2016 with images/{training,validation}/*.jpg and "
    "annotations/{training,validation}/*.png"
)


#: The benchmark's colour of each class 0..149 (after reduce_zero_label; class c is value c+1 in an
#: annotation PNG), as used by the ADE20K devkit and mmsegmentation, ten RRGGBB entries a line.
_PALETTE_HEX = (
    "787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 "
    "e005ff ebff07 96053d 787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 "
    "0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff "
    "08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 "
    "ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f "
    "14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff "
    "0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00 "
    "008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff "
    "ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 "
    "00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a ff7000 "
    "8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff "
    "00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 "
    "ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 "
    "00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff "
    "4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff "
)


def palette() -> np.ndarray:
    """(150, 3) uint8: the benchmark colour of each class index 0..149."""
    return np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _PALETTE_HEX.split()], dtype=np.uint8)


def colorize(mask: np.ndarray | torch.Tensor, ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(H, W) class indices 0..149 (255 = ignore) -> (H, W, 3) uint8 RGB in the ADE20K palette;
    ignored pixels (and any value above 149) get ``ignore_color``."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    lut = np.tile(np.array(ignore_color, dtype=np.uint8), (256, 1))
    lut[:NUM_CLASSES] = palette()
    return lut[m.astype(np.int64).clip(0, 255)]


def find_root(root: str | Path) -> Path:
    """Return the ``ADEChallengeData2016`` folder under/at ``root`` or raise :class:`ConfigError`."""
    root = Path(root).expanduser()
    for cand in (root, root / FOLDER):
        if (cand / "images").is_dir() and (cand / "annotations").is_dir():
            return cand
    raise ConfigError(f"data.root={root}: {EXPECTED}; found {describe_dir(root)}")


def read_object_info(path: Path) -> list[str]:
    """``objectInfo150.txt`` -> 150 short class names (first synonym), in label order.

    The file is tab separated (Idx, Ratio, Train, Val, Name) with stray spaces after some
    indices and names ("22 \\t...", "bed "); names list synonyms separated by ", ".
    """
    names: dict[int, str] = {}
    for n, line in enumerate(read_text(path).splitlines()[1:], start=2):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) < 5 or not cols[0].isdigit():
            raise ConfigError(f"{path}:{n}: expected 'Idx<TAB>Ratio<TAB>Train<TAB>Val<TAB>Name', got {line!r}")
        names[int(cols[0])] = cols[4].split(",")[0].strip()
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise ConfigError(f"{path}: expected class indices 1..{NUM_CLASSES}, found {len(names)} rows")
    return [names[i] for i in range(1, NUM_CLASSES + 1)]


def list_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of ``split``, matched by file stem; mismatches are errors."""
    sub = SPLIT_DIRS[split]
    img_dir, ann_dir = root / "images" / sub, root / "annotations" / sub
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise ConfigError(f"{root}: missing {d.relative_to(root)}/ ({EXPECTED}); found {describe_dir(d.parent)}")
    images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")}
    anns = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
    missing = sorted(set(images) - set(anns))
    if missing:
        raise ConfigError(f"{ann_dir}: {len(missing)} image(s) have no annotation, e.g. {missing[0]}.png")
    orphans = sorted(set(anns) - set(images))
    if orphans:
        raise ConfigError(f"{img_dir}: {len(orphans)} annotation(s) have no image, e.g. {orphans[0]}.jpg")
    if not images:
        raise ConfigError(f"{img_dir}: found 0 images ({EXPECTED})")
    return [(images[s], anns[s]) for s in sorted(images)]


def load_label(path: Path, turn: Image.Transpose | None = None) -> np.ndarray:
    """Annotation PNG -> uint8 (H, W) with reduce_zero_label applied (0 -> 255, k -> k-1).

    The PNG's raw indices are read as they are (mode L or P); never ``convert()`` them. ``turn`` is
    the EXIF turn of its image (``images.load_upright``): the mask lies on the image's stored pixels
    and is turned with them (a transpose moves indices exactly).
    """
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise ConfigError(
                    f"{path}: annotation mode {img.mode}; ADEChallengeData2016 annotations are single-channel class "
                    "indices (the full ADE20K release encodes classes in RGB and is a different dataset)"
                )
            raw = np.array(img.transpose(turn) if turn is not None else img, dtype=np.uint8)
    except OSError as err:
        raise UnreadableImageError(f"cannot decode annotation {path}: {err}") from err
    if raw.max(initial=0) > NUM_CLASSES:
        raise ConfigError(f"{path}: label value {raw.max()} > {NUM_CLASSES}; not an ADEChallengeData2016 annotation")
    # uint8 arithmetic wraps 0 - 1 to 255 = ignore: the reduction in one step
    return raw - np.uint8(1)


class ADE20KDataset(SkippingDataset):
    """Image/annotation pairs; ``train`` applies the joint transform, eval keeps labels original."""

    def __init__(
        self, pairs: list[tuple[Path, Path]], transform: Any, train: bool, seed: int = 0, max_retries: int = 10,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(train, seed, max_retries, root)
        self.pairs = pairs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def image_path(self, index: int) -> Path:
        return self.pairs[index][0]

    def load(self, index: int) -> dict[str, Any]:
        img_path, ann_path = self.pairs[index]
        upright, turn = load_upright(img_path)
        image = F.pil_to_tensor(upright)
        label = torch.from_numpy(load_label(ann_path, turn))
        if label.shape != image.shape[-2:]:
            turned = " (both turned by the image's EXIF Orientation: annotations lie on the stored pixels)" if turn else ""
            raise ConfigError(f"{ann_path}: size {tuple(label.shape)} differs from its image {tuple(image.shape[-2:])}{turned}")
        return self._sample(index, image, label)

    def placeholder(self, index: int, size: tuple[int, int]) -> dict[str, Any]:
        # every label pixel is "ignore": even if a module scored it, it would add nothing
        w, h = size
        return self._sample(index, torch.zeros(3, h, w, dtype=torch.uint8), torch.full((h, w), IGNORE_INDEX, dtype=torch.uint8))

    def _sample(self, index: int, image: torch.Tensor, label: torch.Tensor) -> dict[str, Any]:
        if self.train:
            out = self.transform({"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(label)})
            image_t, mask = out["image"].as_subclass(torch.Tensor), out["mask"].as_subclass(torch.Tensor)
        else:
            image_t, mask = self.transform(tv_tensors.Image(image)).as_subclass(torch.Tensor), label
        return {
            "image": image_t,
            "mask": mask.long(),
            "index": torch.tensor(index),
            "image_size": torch.tensor(image_t.shape[-2:]),
            "label_size": torch.tensor(mask.shape[-2:]),
            "train": self.train,  # read (and dropped) by pad_collate
        }


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of different sizes: images padded with 0 (the mean colour after
    normalisation), masks with 255 (ignore), bottom/right so coordinates are unchanged.
    Evaluation batches add ``masks``: the list of unpadded original-resolution labels."""

    def pad_stack(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
        h = max(t.shape[-2] for t in tensors)
        w = max(t.shape[-1] for t in tensors)
        return torch.stack([nnf.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value) for t in tensors])

    batch: dict[str, Any] = {
        "image": pad_stack([s["image"] for s in samples], 0.0),
        "mask": pad_stack([s["mask"] for s in samples], IGNORE_INDEX),
        "index": torch.stack([s["index"] for s in samples]),
        "image_size": torch.stack([s["image_size"] for s in samples]),
        "label_size": torch.stack([s["label_size"] for s in samples]),
    }
    if not samples[0]["train"]:
        # evaluation: also the unpadded original-resolution labels, one (H_i, W_i) tensor each
        batch["masks"] = [s["mask"] for s in samples]
    if "valid" in samples[0]:  # evaluation: False for an unreadable file (excluded from mIoU)
        batch["valid"] = torch.stack([s["valid"] for s in samples])
    return batch


class ADE20KDataModule(BaseDataModule):
    """ADE20K semantic segmentation, mmsegmentation's recipe.

    Args:
        root: ``ADEChallengeData2016`` or its parent.
        crop_size: train crop, and the eval size: side or [H, W] (multiples of the patch size).
        scale: (long, short) of the random rescale; default (4 * crop, crop) = mmseg (2048, 512).
        ratio_range: random rescale ratio range.
        cat_max_ratio: max share of one class in a train crop (1.0 disables the check).
        eval_resize: "square" (whole image resized to ``crop_size``) or "short_side" (short side
            to ``crop_size``, aspect kept, padded to a multiple of ``patch_size``: for sliding
            windows).
    """

    collate_fn = staticmethod(pad_collate)

    def __init__(
        self,
        root: str = "data/ade20k",
        crop_size: int | list[int] = 512,
        scale: list[int] | None = None,
        ratio_range: list[float] | None = None,
        cat_max_ratio: float = 0.75,
        eval_resize: str = "square",
        patch_size: int = 14,
        max_retries: int = 10,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        if eval_resize not in ("square", "short_side"):
            raise ConfigError(f"data.eval_resize must be 'square' or 'short_side', got {eval_resize!r}")
        self.root = root
        self.crop_size = crop_size
        self.scale = scale
        self.ratio_range = tuple(ratio_range) if ratio_range is not None else (0.5, 2.0)
        self.cat_max_ratio = cat_max_ratio
        self.eval_resize = eval_resize
        self.patch_size = patch_size
        self.max_retries = max_retries
        self.num_classes = NUM_CLASSES
        self.ignore_index = IGNORE_INDEX
        self.class_names = [f"class_{i}" for i in range(NUM_CLASSES)]
        self._root: Path | None = None

    #: annotation PNGs store class c as c + 1 (0 = "other"): predicted masks are written that way
    label_offset = 1

    def label_palette(self) -> np.ndarray:
        """(151, 3): black for 0 ("other"), then the benchmark colour of each class."""
        return np.vstack([np.zeros((1, 3), dtype=np.uint8), palette()])

    def dataset_root(self) -> Path:
        if self._root is None:
            self._root = find_root(self.root)
            info = self._root / "objectInfo150.txt"
            if info.is_file():
                self.class_names = read_object_info(info)
            else:
                log.warning("%s not found: class names will be class_0..class_149", info)
        return self._root

    def build_dataset(self, split: str) -> Dataset:
        pairs = list_pairs(self.dataset_root(), split)
        if split == "train":
            transform = ade20k_train_transform(self.crop_size, self.scale, self.ratio_range, self.cat_max_ratio)
        else:
            transform = ade20k_eval_transform(self.crop_size, self.eval_resize, self.patch_size)
        return ADE20KDataset(
            pairs, transform, train=split == "train", seed=self.seed, max_retries=self.max_retries, root=self.dataset_root()
        )

    def teardown(self, stage: str | None = None) -> None:
        report_skipped(self.datasets.values())


# ------------------------------------------------------------------------------------------
# tiny copy
# ------------------------------------------------------------------------------------------


def _object_info_text() -> str:
    # same columns and quirks as the real file: a stray space after some indices, a trailing
    # space after some names, comma-separated synonyms
    rows = ["Idx\tRatio\tTrain\tVal\tName"]
    for i in range(1, NUM_CLASSES + 1):
        idx = f"{i} " if i in (22, 24, 25) else str(i)
        name = f"thing{i}, synonym{i}" if i % 3 else f"thing{i} "
        rows.append(f"{idx}\t{0.2 / i:.4f}\t{10000 // i}\t{1000 // i}\t{name}")
    return "\n".join(rows) + "\n"


def make_label_map(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A blocky label map with values in 0..150 (0 = other), several classes per image."""
    gh, gw = max(1, h // 40), max(1, w // 40)
    coarse = rng.integers(0, NUM_CLASSES + 1, size=(gh, gw), dtype=np.uint8)
    coarse[rng.random(size=coarse.shape) < 0.2] = 0
    return np.array(Image.fromarray(coarse).resize((w, h), Image.Resampling.NEAREST))


def make_tiny(
    root: str | Path, n_train: int = 4, n_val: int = 3, seed: int = 0, nested: bool = True, scale: float = 1.0
) -> Path:
    """Write a small ADEChallengeData2016 copy; returns the folder to use as ``data.root``.

    Odd sizes (wider and taller than the crop, and smaller) exercise rescale/crop/pad and the
    original-resolution eval. One train image is grayscale, annotations are mode L and P.
    ``scale`` shrinks every size (for faster smoke runs).
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / FOLDER if nested else Path(root)
    sizes = [(300, 200), (453, 683), (180, 150), (512, 700)]
    for split, prefix, n in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            h, w = (max(8, int(x * scale)) for x in sizes[(i - 1) % len(sizes)])
            labels = make_label_map(rng, h, w)
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            img = Image.fromarray(arr)
            if split == "training" and i == 2:
                img = img.convert("L")
            img.save(base / "images" / split / f"{prefix}_{i:08d}.jpg", quality=90)
            ann = Image.fromarray(labels)  # mode L
            if i % 2 == 0:  # a palette PNG: the pixel values are still the raw class indices
                ann = Image.frombytes("P", (w, h), labels.tobytes())
                ann.putpalette(rng.integers(0, 256, size=768, dtype=np.uint8).tobytes())
            ann.save(base / "annotations" / split / f"{prefix}_{i:08d}.png")
    (base / "objectInfo150.txt").write_text(_object_info_text())
    (base / "sceneCategories.txt").write_text(
        "".join(f"ADE_train_{i:08d} street\n" for i in range(1, n_train + 1))
        + "".join(f"ADE_val_{i:08d} bedroom\n" for i in range(1, n_val + 1))
    )
    return Path(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny ADEChallengeData2016 copy in the real layout")
    parser.add_argument("--make-tiny", metavar="DIR", required=True, help="output folder")
    args = parser.parse_args(argv)
    root = make_tiny(args.make_tiny)
    print(f"wrote a tiny ADE20K copy to {root}/{FOLDER}; use data.root={root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
