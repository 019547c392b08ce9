"""DataLoader worker set-up (data/workers.py): freed memory kept for reuse, own process group."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

# A video worker's pattern: a batch of 5-MB clips allocated, held, then freed together, ten times.
# Prints the page faults that cost: by default glibc gives much of the memory back after each batch
# and faults it in afresh (a fault per 4-KB page); once kept, the next batch reuses the same pages.
FAULTS = """
import os, resource, sys, torch
from lw_lightning.data.workers import loader_worker_init
if sys.argv[1] == "kept":
    loader_worker_init(0)

def batch():
    held = [torch.ones(5 << 20, dtype=torch.uint8) for _ in range(8)]
    del held

batch()  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(os.getpgrp() == os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, POSIX process groups")
def test_workers_reuse_freed_blocks_and_leave_the_run_s_process_group():
    def run(mode: str) -> tuple[bool, int]:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, capture_output=True, text=True, check=True)
        own_group, faults = out.stdout.split()[-2:]
        return own_group == "True", int(faults)

    (default_group, default), (kept_group, kept) = run("default"), run("kept")
    assert kept_group and not default_group  # a worker leaves the run's group (signals: see loader_worker_init)
    assert default > 5000  # seen: 11,500 (10 batches of 8 x 1,280 pages: most faulted in again)
    assert kept * 4 < default  # seen: 1,280
