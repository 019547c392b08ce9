"""Shared image-file plumbing: decoding, EXIF orientation, the unreadable-file policy, and root-layout errors.

Orientation: a camera stores the pixels as the sensor read them and an EXIF Orientation tag that
says how to turn them for display (a phone held upright: 6, "turn 90° clockwise"). Every image is
decoded upright (:func:`load_upright`, ``ImageOps.exif_transpose``), as the videos are. Annotations
drawn on an image (ADE20K masks, Traffic Signs boxes) lie on its *stored* pixels (the datasets'
annotation tools ignored the tag, ``docs/datasets.md``), so they are turned with their image
(:func:`turn_box`, ``Image.transpose`` of the mask) and stay on the same pixels.

Policy for files that cannot be decoded (truncated, not an image, missing), the same as for
corrupt videos (``docs/bad_inputs.md``):

* training skips them: the sample is replaced by another index drawn from an RNG seeded by
  ``(seed, index, attempt)`` (so a run is reproducible), at most ``max_retries`` times in a row;
  every skip is counted in a counter shared with the DataLoader workers and logged;
* evaluation never substitutes another image: the sample comes back as a black placeholder of
  the right shape with ``valid=False``; the modules exclude it from every metric and count it in
  ``{stage}/corrupt_images`` (part of the printed summary), and each one is logged by name.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import UnreadableImageError

log = logging.getLogger(__name__)


#: PIL modes of 16-bit grayscale data; "I" (32-bit) is how older Pillow opened 16-bit PNGs
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image to 8-bit RGB, scaling 16-bit grayscale to the 8-bit range.

    ``convert('RGB')`` clips 16-bit values at 255 instead of scaling them, so a 16-bit PNG would
    come out (nearly) all white; 0..65535 is mapped to 0..255 by ``round(v / 257)`` instead.
    """
    if img.mode in SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img, dtype=np.float64), 0, 65535)
        gray = np.rint(wide / 257.0).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return img.convert("RGB")


#: EXIF Orientation -> the transpose that shows the stored pixels upright (ImageOps.exif_transpose's table)
EXIF_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: the turns that swap width and height
SWAPS_SIDES = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90)
EXIF_ORIENTATION = 0x0112


def exif_turn(img: Image.Image) -> Image.Transpose | None:
    """The transpose that ``img``'s EXIF Orientation asks for; None when it is upright as stored."""
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels are still good, shown as stored
        return None
    return EXIF_TURNS.get(orientation)


def load_upright(path: str | Path) -> tuple[Image.Image, Image.Transpose | None]:
    """Decode any image PIL understands as 8-bit RGB, turned upright by its EXIF Orientation; also
    return the turn applied (None: none), for annotations that lie on the stored pixels.

    The decoder is chosen from the file's bytes, not its extension: ImageNet holds a PNG named
    ``.JPEG``, CMYK JPEGs and grayscale files, all of which ``convert('RGB')`` handles; 16-bit
    grayscale is scaled by :func:`to_rgb`.
    """
    try:
        with Image.open(path) as img:
            turn = exif_turn(img)
            # only when needed: exif_transpose copies an image that has nothing to turn
            return to_rgb(ImageOps.exif_transpose(img) if turn is not None else img), turn
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # FileNotFoundError and PIL's UnidentifiedImageError are OSErrors too
        raise UnreadableImageError(f"cannot decode image {path}: {_first_line(err)}") from err


def load_rgb(path: str | Path) -> Image.Image:
    """:func:`load_upright`'s image: 8-bit RGB, upright."""
    return load_upright(path)[0]


def turn_box(box: tuple[float, float, float, float], turn: Image.Transpose, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """An ``(x0, y0, x1, y1)`` box on the stored pixels, on the image turned by ``turn``, whose
    upright ``size`` is (width, height). Coordinates are continuous (0..width), as in XYXY boxes."""
    w, h = (size[1], size[0]) if turn in SWAPS_SIDES else size  # the stored width and height
    point = {
        Image.Transpose.FLIP_LEFT_RIGHT: lambda x, y: (w - x, y),
        Image.Transpose.FLIP_TOP_BOTTOM: lambda x, y: (x, h - y),
        Image.Transpose.ROTATE_180: lambda x, y: (w - x, h - y),
        Image.Transpose.TRANSPOSE: lambda x, y: (y, x),
        Image.Transpose.ROTATE_90: lambda x, y: (y, w - x),  # counter-clockwise
        Image.Transpose.ROTATE_270: lambda x, y: (h - y, x),  # clockwise
        Image.Transpose.TRANSVERSE: lambda x, y: (h - y, w - x),
    }[turn]
    (ax, ay), (bx, by) = point(box[0], box[1]), point(box[2], box[3])
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def header_size(path: str | Path) -> tuple[int, int] | None:
    """Upright (width, height) from an image file's header without decoding it, or None when unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            return (h, w) if exif_turn(img) in SWAPS_SIDES else (w, h)
    except Exception:  # any failure means "no usable header": the caller falls back
        return None


class SkipCounter:
    """A process-shared count of skipped training files (DataLoader workers add to it)."""

    def __init__(self) -> None:
        self._value = mp.Value("i", 0)

    def add(self) -> int:
        with self._value.get_lock():
            self._value.value += 1
            return int(self._value.value)

    @property
    def value(self) -> int:
        return int(self._value.value)


class SkippingDataset(Dataset):
    """Base for file-backed datasets.

    Subclasses implement :meth:`load` (one sample), :meth:`image_path` (its image file) and
    :meth:`placeholder` (a sample of the same shapes built from a black image, for evaluation).

    Args:
        train: True applies the skip-and-retry policy; False flags bad files ``valid=False``.
        seed: seed of the replacement-index RNG.
        max_retries: bad files tolerated in a row for one sample before giving up.
        root: data root; :meth:`source` names files relative to it.
        missing: annotated images of the split that have no file (not among the samples; the
            modules report the count, ``data/missing.py``).
    """

    def __init__(
        self, train: bool, seed: int = 0, max_retries: int = 10, root: str | Path | None = None, missing: int = 0
    ) -> None:
        self.train = train
        self.seed = seed
        self.max_retries = max_retries
        self.root = Path(root) if root is not None else None
        self.missing = missing
        self.skipped = SkipCounter()

    def load(self, index: int) -> dict[str, Any]:
        """The sample at ``index``; raises :class:`UnreadableImageError` for a bad file."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    def image_path(self, index: int) -> Path:
        """The image file of sample ``index``."""
        raise NotImplementedError(f"{type(self).__name__} must implement image_path()")

    def placeholder(self, index: int, size: tuple[int, int]) -> dict[str, Any]:
        """A sample of ``index`` built from a black ``size`` = (width, height) image (and, for
        segmentation, an all-ignore label), so it batches with the others; it is never scored."""
        raise NotImplementedError(f"{type(self).__name__} must implement placeholder()")

    def source(self, index: int) -> str:
        """The sample's file, relative to the data root when it lies below it (for predictions.csv)."""
        path = self.image_path(index)
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:  # outside the root (e.g. a symlinked split): the full path
                pass
        return str(path)

    def placeholder_size(self, index: int) -> tuple[int, int]:
        """Size for the placeholder of a bad file: its own header when that survived (a truncated
        JPEG keeps it), else the first readable header of the split, so the batch still stacks."""
        own = header_size(self.image_path(index))
        if own is not None:
            return own
        for other in range(len(self)):  # type: ignore[arg-type]
            size = header_size(self.image_path(other)) if other != index else None
            if size is not None:
                return size
        return (224, 224)  # no readable header at all: any size (every sample is excluded anyway)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.train:
            try:
                sample = self.load(index)
                valid = True
            except UnreadableImageError as err:
                total = self.skipped.add()
                log.warning("unreadable evaluation image (counted, excluded from the metrics; %d so far): %s", total, err)
                sample, valid = self.placeholder(index, self.placeholder_size(index)), False
            sample["valid"] = torch.tensor(valid)
            return sample
        rng = random.Random(f"{self.seed}:{index}")
        current = index
        for attempt in range(self.max_retries + 1):
            try:
                return self.load(current)
            except UnreadableImageError as err:
                total = self.skipped.add()
                log.warning("skipping unreadable training image (%d skipped so far): %s", total, err)
                if attempt == self.max_retries:
                    raise UnreadableImageError(
                        f"{self.max_retries + 1} unreadable training images in a row, last: {err}; "
                        "check the dataset files"
                    ) from err
                n = len(self)  # type: ignore[arg-type]
                if n > 1:  # another index than the one that just failed
                    step = rng.randrange(1, n)
                    current = (current + step) % n
        raise AssertionError("unreachable")


def skipped_total(datasets: Iterable[Dataset]) -> int:
    """Sum of the skip counters of the given datasets (those that have one)."""
    return sum(ds.skipped.value for ds in datasets if isinstance(ds, SkippingDataset))


def report_skipped(datasets: Iterable[Dataset]) -> int:
    """Log the number of skipped training / excluded evaluation images once (from ``teardown``);
    return the total."""
    datasets = [ds for ds in datasets if isinstance(ds, SkippingDataset)]
    train = sum(ds.skipped.value for ds in datasets if ds.train)
    evaluation = sum(ds.skipped.value for ds in datasets if not ds.train)
    if train:
        log.warning("%d unreadable training image(s) were skipped (see the warnings above for names)", train)
    if evaluation:
        log.warning("%d unreadable evaluation image(s) were excluded from the metrics (named above)", evaluation)
    return train + evaluation


def describe_dir(path: Path, limit: int = 6) -> str:
    """One-line description of what is at ``path`` (for 'expected X, found Y' errors)."""
    if not path.exists():
        return "nothing (the path does not exist)"
    if not path.is_dir():
        return "a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if not p.name.startswith("."))
    if not names:
        return "an empty folder"
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return "entries " + ", ".join(names[:limit]) + more


def image_files(folder: Path, exts: tuple[str, ...] = (".jpeg", ".jpg", ".png")) -> list[Path]:
    """Sorted image files directly inside ``folder`` (extension matched case-insensitively)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


def name_key(name: str) -> str:
    """A file name with its extension lower-cased: how an annotation's file name is matched to a
    file (cameras and Windows tools write ``.JPG``; the stem stays case-sensitive)."""
    path = Path(name)
    return path.stem + path.suffix.lower()


def files_by_name(folder: Path) -> dict[str, Path]:
    """:func:`name_key` -> file, for the files directly inside ``folder`` ({} when it is absent)."""
    if not folder.is_dir():
        return {}
    return {name_key(p.name): p for p in sorted(folder.iterdir()) if p.is_file()}
