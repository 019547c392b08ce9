"""DataLoader worker setup shared by every DataModule's loaders."""

from __future__ import annotations

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
    ``seed_everything(workers=True)`` is applied here.
    """
    if hasattr(os, "setpgrp"):  # POSIX only
        os.setpgrp()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)
