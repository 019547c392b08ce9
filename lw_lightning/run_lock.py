"""One ``fit`` at a time per run folder.

Two ``fit ckpt_path=last`` started together resumed the same state into the same ``version_N``,
wrote their events side by side, and whichever ended last owned ``last.ckpt``, with no warning. A
``fit`` now holds an exclusive ``flock`` on ``<run dir>/.fit.lock`` while it runs; the file names
the holder (pid, host, start time). The lock goes with the process (also when it is killed), so a
stale file never blocks a later run. Only the process of global rank 0 takes it: the other ranks of
a multi-process run share the folder by design.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = ".fit.lock"

#: environment variables that name this process's rank in a multi-process run
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def is_rank_zero_process() -> bool:
    """Whether every rank variable this process has is 0 (true for a single-process run)."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on {info['host']} (started {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def hold_run_folder(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (created if needed) for a ``fit`` on this process, or raise a one-line
    :class:`ConfigError` naming the process that holds it."""
    if not is_rank_zero_process():
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    # "a+", not "w": opening must not wipe the record of the process that holds the lock
    with open(path, "a+") as handle:  # closing it releases the lock; the file stays (no race with a new holder)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"run folder {folder} is in use by {_holder(path)}, which is training into it; "
                "wait for it to end, or give this run another folder (name=... or logger.version=...)"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
        handle.flush()
        yield
