"""Kinetics-400/600/700 (and any video set in the same layouts) read with decord, or torchcodec with
``decoder="torchcodec"`` (PyAV for rotated videos and for files the first decoder fails on, see ``video_io.py``).

Accepted on-disk layouts (``layout="auto"`` picks the first that matches under ``root``):

* ``csv`` — DeepMind/CVDF annotations ``annotations/{train,val|validate,test}.csv`` with header
  ``label,youtube_id,time_start,time_end,split[,is_cc]``; clips named
  ``{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,webm,mkv,avi}`` found anywhere below ``root``
  (flat per split as CVDF, or in label folders as the ActivityNet crawler / mmaction2); files in a
  ``replacement`` folder win over same-named ones elsewhere.
* ``folders`` — ``{train,val|validate,test}/<label>/*.mp4``; folder names are matched to labels with
  spaces/underscores/punctuation ignored (``air_drumming`` = ``air drumming``).
* ``list`` — ``{train,val,test}.txt`` (or ``*_list.txt``): one ``<path> <int label>`` per line,
  paths relative to ``root`` (mmaction2 / pytorchvideo / PySlowFast style; the last whitespace
  separates the label, so paths may hold spaces).

Class index: position in ``label_map`` (one name per line) when given, else in the sorted set of
training labels; every train/val annotation must carry one of them (a ``ConfigError`` names the file
and line otherwise). Annotation files are read as ``utf-8-sig`` (Excel's byte-order mark). Annotated
clips without a file (extensions match in any case) are left out at setup with one warning; an
evaluation reports their number as ``{stage}/missing_videos`` (``data/missing.py``). A video that fails to
decode (with decord or torchcodec, then PyAV) is, in training, replaced by a seeded random other video (at most ``max_resample`` times;
each replacement is counted in the batch as ``resampled`` and logged); in validation/test it is
returned with ``valid=False`` and zero frames, and the module counts and excludes it.

Split by concern: :mod:`.layout` (file names, annotation CSVs, list files, label maps),
:mod:`.clip_transform` (worker-side crop geometry), :mod:`.dataset` (decoding and the corrupt-video
policy) and :mod:`.datamodule`.
"""

from .clip_transform import ClipTransform, CropPlan, short_side_size, three_crop_offsets
from .datamodule import KineticsDataModule
from .dataset import KineticsDataset
from .layout import (
    FILENAME_RE,
    LAYOUTS,
    SPLIT_ALIASES,
    VIDEO_EXTS,
    VideoRecord,
    clip_key,
    index_clip_files,
    normalize_label,
    parse_clip_filename,
    read_annotation_csv,
    read_label_map,
    read_list_file,
)

__all__ = [
    "FILENAME_RE", "LAYOUTS", "SPLIT_ALIASES", "VIDEO_EXTS", "ClipTransform", "CropPlan", "KineticsDataModule", "KineticsDataset",
    "VideoRecord", "clip_key", "index_clip_files", "normalize_label", "parse_clip_filename", "read_annotation_csv", "read_label_map",
    "read_list_file", "short_side_size", "three_crop_offsets",
]
