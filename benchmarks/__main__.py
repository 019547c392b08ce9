"""``python -m benchmarks bench=NAME [key=value ...]``: the bench suites, from the repository root.

The config is ``conf/benchmark.yaml`` plus ``conf/bench/NAME.yaml`` plus ``key=value`` overrides
(any ``bench.*`` key, ``output_dir=``), composed and checked by ``lw_lightning``'s config layer
(:func:`lw_lightning.cli.run_command`): a mistake is one line on stderr and exit status 2,
``--cfg job`` prints the config, ``--help`` lists the options. Tests call :func:`main` with an argv list.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lw_lightning.cli import run_command

from . import CONFIG_NAME, SCHEMAS, run_bench

PROG = "python -m benchmarks"
USAGE = f"""usage: {PROG} bench=NAME [key=value ...] [--cfg job] [--help]     (from the repository root)

examples:
  {PROG} bench=smoke output_dir=runs/bench/smoke
  {PROG} bench=cpu output_dir=runs/bench/cpu
  {PROG} bench=gpu bench.suites=[images] bench.repeats=20
  {PROG} bench=cpu --cfg job       # print the config

NAME is one of conf/bench/ (cpu, gpu, smoke); docs/benchmarks.md has the details.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    return run_command(
        sys.argv[1:] if argv is None else argv,
        prog=PROG,
        config_name=CONFIG_NAME,
        job=run_bench,
        schemas=SCHEMAS,
        usage=USAGE,
    )


if __name__ == "__main__":
    sys.exit(main())
