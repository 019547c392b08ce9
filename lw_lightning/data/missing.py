"""Annotated samples whose file is absent: a copy that lacks some of its annotation file's clips
(Kinetics loses YouTube videos) or images (a partial ImageNet val next to the full label file).

A split is built from the files that exist. Training skips the others, with one warning. An
evaluation cannot score them, so their number has to travel with the metrics, like the count of
unreadable files: the dataset keeps it as ``missing`` and the modules log it once per evaluation as
``{stage}/missing_images`` or ``{stage}/missing_videos``
(:func:`lw_lightning.modules.valid.log_missing`), which the printed summary and
``summary_<command>.json`` show next to the accuracy. It is counted from the annotation file when
the split is built, so no placeholder travels through the loaders (a copy may lack thousands of
clips), and every rank counts the same number.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


def warn_missing(source: str, split: str, missing: Sequence[str], annotated: int, kind: str) -> None:
    """One warning for the ``missing`` (names) of the ``annotated`` samples that ``source`` (the
    annotation file) lists for ``split``; ``kind`` is ``images`` or ``videos``, as in the metric."""
    if not missing:
        return
    if split == "train":
        fate = "training skips them"
    elif split == "predict":
        fate = "they get no prediction"
    else:
        fate = f"excluded from the metrics and counted in {split}/missing_{kind}"
    example = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    log.warning(
        "%s (%s): %d of %d annotated %s have no file (%s); %s", source, split, len(missing), annotated, kind, example, fate
    )
