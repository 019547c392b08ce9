"""ImageNet-1k (ILSVRC2012-CLS) in the layouts people actually have on disk.

Split by concern: :mod:`.labels` (wnids and label files), :mod:`.layout` (layout detection and
samples), :mod:`.dataset`, :mod:`.datamodule` and :mod:`.tiny` (a small copy for tests).

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

from .datamodule import ImageNetDataModule
from .dataset import ImageNetDataset
from .labels import (
    NUM_CLASSES,
    SYNSET_FIELDS,
    canonical_wnids,
    default_class_names,
    read_devkit_labels,
    read_devkit_meta,
    read_synset_mapping,
    read_val_solution,
    write_devkit_meta,
)
from .layout import ImageNetLayout, find_layout, list_samples
from .tiny import TINY_WNIDS, make_tiny

__all__ = [
    "NUM_CLASSES", "SYNSET_FIELDS", "TINY_WNIDS", "ImageNetDataModule", "ImageNetDataset", "ImageNetLayout",
    "canonical_wnids", "default_class_names", "find_layout", "list_samples", "make_tiny", "read_devkit_labels",
    "read_devkit_meta", "read_synset_mapping", "read_val_solution", "write_devkit_meta",
]
