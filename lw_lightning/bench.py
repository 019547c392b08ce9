"""``python -m lw_lightning bench``: the entry point only; the suites live in ``benchmarks/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_bench(cfg: Any, argv: list[str] | None = None) -> Path:
    """Run the configured benchmark suites (:func:`benchmarks.run_bench`); returns the output dir."""
    from benchmarks import run_bench as run

    return run(cfg, argv)
