"""Swedish Traffic Signs, "Speed Limits" subset (as in attention sampling, IPS and LookWhere).

Layout (``data.root``), as the official zips extract::

    Set1/annotations.txt     Set1/<image>.jpg   or   Set1/Set1Part0/<image>.jpg
    Set2/annotations.txt     Set2/<image>.jpg   or   Set2/Set2Part0/<image>.jpg

``annotations.txt`` has one line per image: ``<file>:<sign>;<sign>;...;`` where a sign is
``MISC_SIGNS`` or ``<visibility>, <lrx>, <lry>, <ulx>, <uly>, <type>, <name>``: the lower-right
corner comes *before* the upper-left one, some numbers carry trailing junk characters
("1053.85l"), the trailing ';' leaves an empty segment, and lines may end in CRLF.

Classes EMPTY / 50_SIGN / 70_SIGN / 80_SIGN (labels 0..3), per image (ATS ``SpeedLimits``):
no sign left once MISC_SIGNS are dropped -> EMPTY; otherwise keep the 50/70/80 signs, drop the
image if none; sort them by visibility (VISIBLE, BLURRED, SIDE_ROAD, OCCLUDED) then larger area;
drop the image unless the first is VISIBLE, else its name is the label. On the real files this
keeps 747 Set1 and 684 Set2 images.

Splits: train = Set1 minus a stratified, seeded ``val_fraction`` slice (``split_seed``), val =
that slice, test/predict = Set2. ``val_fraction=0`` trains on all of Set1 and validates on Set2,
the papers' protocol (they report Set2 accuracy per epoch).

Run ``python -m lw_lightning.data.traffic_signs --make-tiny DIR`` to write a small copy.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError
from .base import BaseDataModule
from .images import SkippingDataset, describe_dir, files_by_name, load_upright, name_key, report_skipped, turn_box
from .synthetic_signs import CLASS_NAMES, render_sign
from .text import TEXT_ENCODING
from .transforms import traffic_signs_transform

log = logging.getLogger(__name__)

LIMITS = ("50_SIGN", "70_SIGN", "80_SIGN")
VISIBILITIES = ("VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED")
NATIVE_SIZE = (960, 1280)  # H, W
EXPECTED = "expected <root>/Set1/annotations.txt and <root>/Set2/annotations.txt with the images in SetN/ or SetN/SetNPart0/"


@dataclass(frozen=True)
class Sign:
    """One annotated sign; the box is stored as the file gives it (lower-right first)."""

    visibility: str
    lrx: float
    lry: float
    ulx: float
    uly: float
    sign_type: str
    name: str

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) = upper-left then lower-right."""
        return (self.ulx, self.uly, self.lrx, self.lry)

    @property
    def area(self) -> float:
        return (self.lrx - self.ulx) * (self.lry - self.uly)


@dataclass(frozen=True)
class AnnotatedImage:
    filename: str
    signs: tuple[Sign, ...]  # MISC_SIGNS already dropped
    line: int


def parse_number(text: str) -> float:
    """Parse a float, stripping trailing junk characters ("1053.85l" -> 1053.85) as ATS does."""
    s = text.strip()
    while s:
        try:
            return float(s)
        except ValueError:
            s = s[:-1]
    raise ValueError(f"not a number: {text!r}")


def parse_annotations(path: str | Path) -> list[AnnotatedImage]:
    """Parse an ``annotations.txt`` (grammar in the module docstring); errors name file:line."""
    path = Path(path)
    out = []
    # utf-8-sig: a byte-order mark would otherwise become part of the first image's name
    for n, raw in enumerate(path.read_bytes().decode(TEXT_ENCODING, errors="replace").splitlines(), start=1):
        line = raw.strip()  # also drops the '\r' of CRLF files
        if not line:
            continue
        filename, sep, rest = line.partition(":")
        if not sep:
            raise ConfigError(f"{path}:{n}: expected '<image file>:<signs>', got {line[:60]!r}")
        signs = []
        for seg in rest.split(";"):
            seg = seg.strip()
            if not seg or seg == "MISC_SIGNS":  # the trailing ';' leaves an empty segment
                continue
            parts = [p.strip() for p in seg.split(",")]
            if len(parts) < 7:
                raise ConfigError(f"{path}:{n}: a sign needs 7 fields '<visibility>, lrx, lry, ulx, uly, <type>, <name>', got {seg!r}")
            if parts[0] not in VISIBILITIES:
                raise ConfigError(f"{path}:{n}: unknown visibility {parts[0]!r} (expected one of {', '.join(VISIBILITIES)})")
            try:
                lrx, lry, ulx, uly = (parse_number(p) for p in parts[1:5])
            except ValueError as err:
                raise ConfigError(f"{path}:{n}: {err}") from None
            signs.append(Sign(parts[0], lrx, lry, ulx, uly, parts[5], parts[6]))
        out.append(AnnotatedImage(filename.strip(), tuple(signs), n))
    return out


def speed_limit_label(signs: tuple[Sign, ...]) -> tuple[int, Sign | None] | None:
    """(label, deciding sign) under the 4-class filter, or None when the image is dropped."""
    if not signs:
        return 0, None
    limits = sorted((s for s in signs if s.name in LIMITS), key=lambda s: (VISIBILITIES.index(s.visibility), -s.area))
    if not limits or limits[0].visibility != "VISIBLE":
        return None
    return CLASS_NAMES.index(limits[0].name), limits[0]


@dataclass(frozen=True)
class SignSample:
    path: Path
    label: int
    box: tuple[float, float, float, float] | None


def load_set(root: Path, set_name: str) -> list[SignSample]:
    """Filtered samples of ``root/<set_name>``, in annotation-file order."""
    ann = root / set_name / "annotations.txt"
    if not ann.is_file():
        raise ConfigError(f"data.root={root}: {EXPECTED}; found {describe_dir(root)} (no {set_name}/annotations.txt)")
    dirs = (root / set_name, root / set_name / f"{set_name}Part0")
    files = [files_by_name(d) for d in dirs]  # the extension in any case: x.jpg is found as x.JPG
    samples, missing = [], []
    for entry in parse_annotations(ann):
        decided = speed_limit_label(entry.signs)
        if decided is None:
            continue
        key = name_key(entry.filename)
        path = next((found[key] for found in files if key in found), None)
        if path is None:
            missing.append(entry.filename)
            continue
        label, sign = decided
        samples.append(SignSample(path, label, sign.box if sign else None))
    if missing:
        raise ConfigError(
            f"{ann}: {len(missing)} kept image(s) are missing from {dirs[0]}/ and {dirs[1]}/, e.g. {missing[0]}"
        )
    if not samples:
        raise ConfigError(f"{ann}: no image passes the speed-limit filter")
    return samples


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): ``round(fraction * n_c)`` of each class (at least 1 when n_c >= 2)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        val.extend(idx[:k])
        train.extend(idx[k:])
    return sorted(train), sorted(val)


class TrafficSignsDataset(SkippingDataset):
    """Images with label and the deciding sign's box (-1s for EMPTY), transformed jointly."""

    def __init__(
        self, samples: list[SignSample], transform: Any, train: bool, seed: int = 0, max_retries: int = 10,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(train, seed, max_retries, root)
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        return self.samples[index].path

    def load(self, index: int) -> dict[str, Any]:
        image, turn = load_upright(self.image_path(index))
        return self._sample(index, image, turn)

    def placeholder(self, index: int, size: tuple[int, int]) -> dict[str, Any]:
        return self._sample(index, Image.new("RGB", size))

    def _sample(self, index: int, pil_image: Image.Image, turn: Image.Transpose | None = None) -> dict[str, Any]:
        s = self.samples[index]
        image = tv_tensors.Image(F.pil_to_tensor(pil_image))
        sample: dict[str, Any] = {"image": image}
        box = s.box
        if box is not None and turn is not None:  # the box lies on the stored pixels: turned with them
            box = turn_box(box, turn, pil_image.size)
        if box is not None:
            sample["box"] = tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=tuple(image.shape[-2:]))
        out = self.transform(sample)
        box = out["box"][0].as_subclass(torch.Tensor).float() if s.box is not None else torch.full((4,), -1.0)
        return {"image": out["image"].as_subclass(torch.Tensor), "label": torch.tensor(s.label), "box": box, "index": torch.tensor(index)}


class TrafficSignsDataModule(BaseDataModule):
    """Swedish Traffic Signs speed limits: 4 classes, train Set1 / test Set2.

    Args:
        root: folder holding Set1/ and Set2/.
        image_size: None keeps the native 960x1280 (padded bottom/right to a multiple of
            ``pad_multiple``: 966x1288); a side or [H, W] resizes to it (e.g. 994).
        val_fraction: stratified share of Set1 held out for validation (0: validate on Set2).
        split_seed: seed of that split (independent of the training ``seed``).
        color_jitter / translate_px: train augmentation (translation in native pixels).
    """

    def __init__(
        self,
        root: str = "data/traffic_signs",
        image_size: int | list[int] | None = None,
        pad_multiple: int = 14,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        color_jitter: float = 0.1,
        translate_px: float = 100.0,
        max_retries: int = 10,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed)
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must lie in [0, 1), got {val_fraction}")
        self.root = root
        self.image_size = image_size
        self.pad_multiple = pad_multiple
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.color_jitter = color_jitter
        self.translate_px = translate_px
        self.max_retries = max_retries
        self.num_classes = len(CLASS_NAMES)
        self.class_names = list(CLASS_NAMES)
        self._sets: dict[str, list[SignSample]] = {}

    def _set(self, name: str) -> list[SignSample]:
        if name not in self._sets:
            root = Path(self.root).expanduser()
            if not root.is_dir():
                raise ConfigError(f"data.root={root}: {EXPECTED}; found {describe_dir(root)}")
            self._sets[name] = load_set(root, name)
        return self._sets[name]

    def split_samples(self, split: str) -> list[SignSample]:
        """Samples of ``split`` (train/val from Set1, test/predict from Set2)."""
        if split in ("test", "predict") or (split == "val" and self.val_fraction == 0):
            return self._set("Set2")
        set1 = self._set("Set1")
        train, val = stratified_split([s.label for s in set1], self.val_fraction, self.split_seed)
        return [set1[i] for i in (train if split == "train" else val)]

    @property
    def class_weights(self) -> list[float]:
        """Balanced weights n / (K * n_c) over the train split (0 for an absent class)."""
        counts = Counter(s.label for s in self.split_samples("train"))
        n, k = sum(counts.values()), self.num_classes
        return [n / (k * counts[c]) if counts[c] else 0.0 for c in range(k)]

    def build_dataset(self, split: str) -> Dataset:
        transform = traffic_signs_transform(
            split == "train", self.image_size, self.pad_multiple, self.color_jitter, self.translate_px, NATIVE_SIZE
        )
        root = Path(self.root).expanduser()
        return TrafficSignsDataset(self.split_samples(split), transform, split == "train", self.seed, self.max_retries, root)

    def teardown(self, stage: str | None = None) -> None:
        report_skipped(self.datasets.values())


# ------------------------------------------------------------------------------------------
# tiny copy
# ------------------------------------------------------------------------------------------


def format_sign(visibility: str, box: tuple[float, float, float, float], sign_type: str, name: str, junk: str = "") -> str:
    """A sign in the file's grammar; ``box`` is (x0, y0, x1, y1) and is written LR first."""
    x0, y0, x1, y1 = box
    return f"{visibility}, {x1:.2f}{junk}, {y1:.2f}, {x0:.2f}, {y0:.2f}, {sign_type}, {name}"


def _quirk_lines(w: int, h: int) -> list[tuple[list[str], str | None]]:
    """Signs of the special images (relative boxes scaled to w x h) and their expected class."""

    def b(x: float, y: float, s: float) -> tuple[float, float, float, float]:
        return (x * w, y * h, (x + s) * w, y * h + s * w)  # square in pixels, side s * w

    return [
        ([], "EMPTY"),
        (["MISC_SIGNS"], "EMPTY"),
        ([format_sign("VISIBLE", b(0.6, 0.3, 0.05), "PROHIBITORY", "70_SIGN"), "MISC_SIGNS"], "70_SIGN"),
        ([format_sign("BLURRED", b(0.2, 0.2, 0.06), "PROHIBITORY", "70_SIGN")], None),
        ([format_sign("VISIBLE", b(0.4, 0.4, 0.06), "PROHIBITORY", "90_SIGN")], None),
        ([format_sign("VISIBLE", b(0.1, 0.5, 0.03), "PROHIBITORY", "50_SIGN"),
          format_sign("VISIBLE", b(0.7, 0.2, 0.08), "PROHIBITORY", "80_SIGN")], "80_SIGN"),
        ([format_sign("OCCLUDED", b(0.1, 0.1, 0.12), "PROHIBITORY", "80_SIGN"),
          format_sign("VISIBLE", b(0.5, 0.5, 0.04), "PROHIBITORY", "50_SIGN")], "50_SIGN"),
        ([format_sign("VISIBLE", b(0.3, 0.3, 0.05), "MANDATORY", "PASS_RIGHT_SIDE")], None),
        ([format_sign("VISIBLE", b(0.55, 0.25, 0.05), "PROHIBITORY", "50_SIGN", junk="l")], "50_SIGN"),
    ]


def make_tiny(root: str | Path, size: tuple[int, int] = (240, 320), n_set1: int = 24, n_set2: int = 12, seed: int = 0) -> Path:
    """Write Set1/ (flat) and Set2/Set2Part0/ (nested, CRLF annotations) in the real grammar.

    ``size`` is (H, W) (the real images are 960x1280). Each set starts with the quirk images of
    :func:`_quirk_lines`, then images labelled EMPTY/50/70/80 in turn. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    h, w = size
    for set_name, n, nested, eol in (("Set1", n_set1, False, "\n"), ("Set2", n_set2, True, "\r\n")):
        img_dir = root / set_name / (f"{set_name}Part0" if nested else "")
        img_dir.mkdir(parents=True, exist_ok=True)
        entries = _quirk_lines(w, h)
        cycle = ["EMPTY", "50_SIGN", "70_SIGN", "80_SIGN"]
        for i in range(max(0, n - len(entries))):
            name = cycle[i % 4]
            if name == "EMPTY":
                entries.append(([], name))
                continue
            s = rng.uniform(0.03, 0.08)
            x, y = rng.uniform(0.05, 0.9), rng.uniform(0.05, 0.8)
            box = (x * w, y * h, min(w - 1, (x + s) * w), min(h - 1, y * h + s * w))
            entries.append(([format_sign("VISIBLE", box, "PROHIBITORY", name), "MISC_SIGNS"], name))
        lines = []
        for i, (signs, _) in enumerate(entries):
            filename = f"12773{set_name[-1]}0000Image{i:06d}.jpg"
            lines.append(f"{filename}:" + "".join(s + ";" for s in signs))
            arr = rng.integers(60, 200, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
            draw = ImageDraw.Draw(img)
            draw.rectangle([0, h * 0.6, w, h], fill=(90, 90, 95))  # road
            for sign in signs:
                if sign == "MISC_SIGNS":
                    continue
                parts = [p.strip() for p in sign.split(",")]
                x1, y1, x0, y0 = (parse_number(p) for p in parts[1:5])
                d = max(4, int(min(x1 - x0, y1 - y0)))
                text = parts[6][:2] if parts[6] in LIMITS else None  # other signs: a distractor
                sprite = render_sign(d, text)
                img.paste(sprite, (int(x0), int(y0)), sprite)
            img.save(img_dir / filename, quality=90)
        (root / set_name / "annotations.txt").write_bytes((eol.join(lines) + eol).encode())
    return root


def expected_tiny_labels(n: int) -> list[str | None]:
    """Class name per line of a tiny set of ``n`` lines (None = dropped): for tests."""
    quirks = [label for _, label in _quirk_lines(320, 240)]
    cycle = ["EMPTY", "50_SIGN", "70_SIGN", "80_SIGN"]
    return quirks + [cycle[i % 4] for i in range(max(0, n - len(quirks)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny Swedish Traffic Signs copy in the real layout")
    parser.add_argument("--make-tiny", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--full-size", action="store_true", help="write 960x1280 images like the real ones")
    args = parser.parse_args(argv)
    root = make_tiny(args.make_tiny, NATIVE_SIZE if args.full_size else (240, 320))
    print(f"wrote a tiny Swedish Traffic Signs copy to {root}; use data.root={root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
