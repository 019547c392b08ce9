"""Shared image-file plumbing: decoding, the unreadable-file policy, and root-layout errors.

Policy for files that cannot be decoded (truncated, not an image, missing):

* training skips them: the sample is replaced by another index drawn from an RNG seeded by
  ``(seed, index, attempt)`` (so a run is reproducible), at most ``max_retries`` times in a row;
  every skip is counted in a counter shared with the DataLoader workers and logged;
* evaluation never substitutes: it raises :class:`UnreadableImageError` naming the file, because a
  silently replaced validation image changes the reported metric.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class UnreadableImageError(RuntimeError):
    """An image file that PIL cannot decode (the message names the file)."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode any image PIL understands as 8-bit RGB.

    The decoder is chosen from the file's bytes, not its extension: ImageNet holds a PNG named
    ``.JPEG``, CMYK JPEGs and grayscale files, all of which ``convert('RGB')`` handles.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # FileNotFoundError and PIL's UnidentifiedImageError are OSErrors too
        raise UnreadableImageError(f"cannot decode image {path}: {err}") from err


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
    """Base for file-backed datasets: subclasses implement :meth:`load` for one index.

    Args:
        train: True applies the skip-and-retry policy; False raises on the first bad file.
        seed: seed of the replacement-index RNG.
        max_retries: bad files tolerated in a row for one sample before giving up.
    """

    def __init__(self, train: bool, seed: int = 0, max_retries: int = 10) -> None:
        self.train = train
        self.seed = seed
        self.max_retries = max_retries
        self.skipped = SkipCounter()

    def load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.train:
            return self.load(index)
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
    """Log the number of skipped training images once (from ``teardown``); return it."""
    total = skipped_total(datasets)
    if total:
        log.warning("%d unreadable training image(s) were skipped (see the warnings above for names)", total)
    return total


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
