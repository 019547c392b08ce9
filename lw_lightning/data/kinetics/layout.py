"""Kinetics on disk: clip file names, annotation CSVs, list files and label maps (the layouts of
:mod:`lw_lightning.data.kinetics`)."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError
from ..text import open_text, read_text

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi")
#: the extension in any case: cameras and Windows tools write ``.MP4``
FILENAME_RE = re.compile(r"^(.{11})_(\d{6})_(\d{6})\.(?i:mp4|webm|mkv|avi)$")
#: accepted directory / file stems per split (K700 CSVs say "validate")
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validate"), "test": ("test",)}
LAYOUTS = ("csv", "folders", "list")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated clip: file, class index (-1 when unlabelled) and a readable id."""

    path: str
    label: int
    name: str


def normalize_label(name: str) -> str:
    """Key used to match label spellings across tools: lowercase alphanumerics only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def clip_key(youtube_id: str, start: int, end: int) -> tuple[str, int, int]:
    return (youtube_id, int(start), int(end))


def parse_clip_filename(name: str) -> tuple[str, int, int] | None:
    """``abc-_12345x_000010_000020.mp4`` -> ``("abc-_12345x", 10, 20)``; the 11-char id may hold ``_``."""
    m = FILENAME_RE.match(name)
    return clip_key(m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def index_clip_files(root: Path) -> dict[tuple[str, int, int], Path]:
    """Every Kinetics-named video below ``root``; ``replacement`` folders take precedence."""
    found: dict[tuple[str, int, int], Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        is_replacement = "replacement" in Path(dirpath).relative_to(root).as_posix()
        for fn in sorted(filenames):
            key = parse_clip_filename(fn)
            if key is None:
                continue
            if key not in found or is_replacement:
                found[key] = Path(dirpath) / fn
    return found


def read_annotation_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a Kinetics CSV (header-driven; ``label`` may be absent, as in the K400 test CSV)."""
    with open_text(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("youtube_id", "time_start", "time_end") if c not in fields]
        if missing:
            raise ConfigError(f"{path}: not a Kinetics annotation CSV (missing columns {missing}; header is {fields})")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def read_list_file(path: Path, num_classes: int | None = None, split: str | None = None) -> list[tuple[str, int]]:
    """``<path> <int label>`` lines (a line with only a path gets label -1).

    With ``num_classes`` every label must be a class index, and with ``split`` every line needs
    one: a bad line is a :class:`ConfigError` naming the file and the line (a label outside the
    classes would otherwise surface as an IndexError in the loss).
    """
    items = []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
                label = int(parts[1])
                if num_classes is not None and not 0 <= label < num_classes:
                    raise ConfigError(f"{path}:{n}: label {label} is not a class index 0..{num_classes - 1}")
                items.append((parts[0], label))
            elif len(parts) == 2 and Path(parts[0]).suffix.lower() not in VIDEO_EXTS:
                raise ConfigError(f"{path}:{n}: expected '<path> <int label>', got {line!r}")
            elif split is not None:
                raise ConfigError(f"{path}:{n}: no label (every {split} line needs one)")
            else:
                items.append((line, -1))
    return items


def read_label_map(path: Path) -> list[str]:
    """One class name per line (index = line number); blank lines ignored."""
    names = [ln.strip().strip('"') for ln in read_text(path).splitlines() if ln.strip()]
    if len(set(map(normalize_label, names))) != len(names):
        raise ConfigError(f"label map {path} repeats a class name")
    return names
