"""DataLoader worker setup shared by every DataModule's loaders."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from lightning_fabric.utilities.seed import pl_worker_init_function


def loader_worker_init(worker_id: int, rank: int = 0) -> None:
    """Put the worker in its own process group, then seed it as Lightning would.

    A SIGTERM (or Ctrl-C's SIGINT) sent to the run's process group (``kill -TERM -PGID``, a
    shell's job control, ``timeout``) would otherwise also kill the workers, and the main process
    would then fail with "DataLoader worker ... is killed by signal" in the middle of a step
    instead of stopping at the batch boundary with a checkpoint. The main process still ends
    the workers itself (Lightning's teardown, or ``terminate()`` at exit), and a worker whose
    parent died exits on its own (PyTorch's worker watchdog), so none outlives the run.

    Setting ``worker_init_fn`` stops Lightning from adding its own, so the worker seeding of
    ``seed_everything(workers=True)`` is applied here. Freed memory is kept for reuse
    (:func:`keep_freed_memory`).
    """
    if hasattr(os, "setpgrp"):  # POSIX only
        os.setpgrp()
    keep_freed_memory()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap (glibc's largest allowed threshold on 64-bit)
HEAP_BLOCK_LIMIT = 32 << 20


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MB for reuse instead of giving them back.

    A video worker allocates megabytes per clip (decoded frames, the resized crop) and holds a
    batch of them until collation. With glibc's defaults these blocks are mapped fresh and
    unmapped again batch after batch, and every first touch of a fresh page is a page fault:
    4-7 ms of a 32x2 clip's 55-60 ms with decord on the 2-core benchmark machine (docs/video.md). Served
    from a heap that is never trimmed, they reuse pages already mapped. The worker then holds its
    peak heap (about a batch of clips) for its lifetime. Returns False where there is no glibc.
    """
    name = ctypes.util.find_library("c")
    if not name or "musl" in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
