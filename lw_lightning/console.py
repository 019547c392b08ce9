"""What a run prints: Lightning's own lines, less those that are advertisements or untrue here.

- Lightning 2.6 prints "💡 Tip: ... try installing litlogger / litmodels" on every run: advice for
  a product this project does not use. The filter drops those records only.
- Its pytree helper warns that ``isinstance(treespec, LeafSpec)`` is deprecated on every run with
  torch 2.14: a note to Lightning's own developers, nothing a user can act on.
- Evaluating a checkpoint warns that "callbacks used to create the checkpoint need to be provided":
  validate / test / predict leave the checkpoint callbacks out on purpose (evaluation writes no
  checkpoints), and their saved state is not needed to evaluate. ``fit`` keeps the warning.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

#: the loggers through which Lightning's ``rank_zero_info`` emits
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith("💡 Tip")


def drop_lightning_noise() -> None:
    """Install the filters (once per process)."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvertisements) for f in logger.filters):
            logger.addFilter(_DropAdvertisements())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@contextlib.contextmanager
def evaluation_restore() -> Iterator[None]:
    """Around validate / test / predict of a checkpoint: no warning about its absent checkpoint callbacks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
        yield
