"""ImageNet-1k class identity and the label files that come with the copies: the canonical
sorted wnid list (timm's), Kaggle's ``LOC_synset_mapping.txt`` and ``LOC_val_solution.csv``, and
the devkit's ``meta.mat`` (read and written with ``scipy.io``) and validation ground truth."""

from __future__ import annotations

import csv
import functools
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from timm.data import ImageNetInfo

from ...errors import ConfigError
from ..text import open_text, read_text

NUM_CLASSES = 1000


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
    for line in read_text(path).splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            wnids.append(wnid)
            names.append(name.strip())
    return wnids, names


def read_val_solution(path: Path, wnids: Collection[str] | None = None) -> dict[str, str]:
    """``LOC_val_solution.csv`` -> {image id: wnid}; the label is the first token of the boxes.

    With ``wnids``, a label that is not one of them is a :class:`ConfigError` naming the line.
    """
    out = {}
    with open_text(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: expected the header 'ImageId,PredictionString', got {reader.fieldnames}")
        for row in reader:
            tokens = (row["PredictionString"] or "").split()
            if tokens:
                if wnids is not None and tokens[0] not in wnids:
                    raise ConfigError(f"{path}:{reader.line_num}: '{tokens[0]}' is not one of the 1000 ImageNet-1k wnids")
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
    for n, line in enumerate(read_text(gt_file).split(), start=1):
        ilsvrc_id = int(line)
        if ilsvrc_id not in id_to_wnid:
            raise ConfigError(f"{gt_file}: line {n} holds ILSVRC2012_ID {ilsvrc_id}, which {meta_file} does not define")
        out[n] = id_to_wnid[ilsvrc_id]
    return out
