"""Checkpoints are written whole or not at all.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lies in
the system's temp folder; committing it is ``shutil.move``, which across file systems is a copy
into the final name. A full disk then left a truncated ``epoch_003.ckpt`` (761,856 of 7.5 MB) next
to the good checkpoints, and a traceback. Here the checkpoint is serialised in memory (as Lightning
does), written to a temporary file in the checkpoint's own folder, flushed to disk, and renamed into
place (atomic on one file system). A failed write removes the temporary file, leaves every earlier
checkpoint as it was (``last.ckpt`` included: it is replaced only by a complete file), and stops the
run with one line (:class:`CheckpointSaveError`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from .errors import CheckpointSaveError

PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (hidden, and not ``*.ckpt``, so no
    ``last*.ckpt`` or top-k lookup ever takes it for a checkpoint)."""
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that replaces a local checkpoint file only with a complete one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # object stores: fsspec's transaction uploads whole objects
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        partial = partial_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except OSError as err:
            partial.unlink(missing_ok=True)
            reason = err.strerror or str(err)
            raise CheckpointSaveError(
                f"could not save checkpoint {path}: {reason}; the earlier checkpoints are kept as they were"
            ) from None
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync the folder, so the rename itself survives a power cut (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
