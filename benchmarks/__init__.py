"""Benchmarks: ``python -m benchmarks bench=<name> [key=value ...]`` (``conf/bench/<name>.yaml``), run
from the repository root (:mod:`.__main__`).

Everything that measures lives in this package, which is the repository's and not installed with
``lw_lightning`` (it imports ``lw_lightning``, never the reverse): the ``bench`` suites (this module
and its siblings), the method comparisons (:mod:`.compare` on images, :mod:`.compare_video` on
video), the mixed-precision check (:mod:`.precision`) and the image-loader throughput
(:mod:`.data_throughput`).

Runs the suites listed in ``bench.suites`` (images, video, data, overhead, accuracy) and writes
under ``output_dir``: ``benchmarks.md`` (all tables plus the machine and the command),
``results.json`` (every measured value), ``speedup_vs_resolution.png`` and, when a checkpoint is
given, ``accuracy_vs_flops.png``. Each suite's markdown is also written as it finishes
(``<suite>.md``), so a run that is cut short keeps what it measured.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import BenchConfig, parse_bench_config

#: the primary config of ``python -m benchmarks`` in ``conf/``, and its top-level node typed by a dataclass
CONFIG_NAME = "benchmark"
SCHEMAS = {"bench": "benchmarks.config.BenchConfig"}


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_bench(cfg: DictConfig, argv: list[str] | None = None) -> Path:
    """Run the configured suites; returns the output directory (``argv``: the words after
    ``python -m benchmarks``, recorded with the results)."""
    bench: BenchConfig = parse_bench_config(OmegaConf.to_container(cfg.get("bench"), resolve=True) if cfg.get("bench") else None)
    from . import report
    from .common import load_average, machine_info, make_env  # torch: once the config is known good

    out = Path(str(cfg.get("output_dir") or "runs/bench"))
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(bench.device, bench.precision, bench.threads, bench.warmup, bench.repeats)
    info = machine_info(env)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = time.perf_counter()
    _log(f"bench on {env.device} ({info['precision']}), writing to {out}")
    results: dict[str, Any] = {"machine": info, "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    for suite in bench.suites:
        t0 = time.perf_counter()
        rows = _run_suite(suite, bench, env, out)
        results[suite] = rows
        results.setdefault("suite_seconds", {})[suite] = round(time.perf_counter() - t0, 1)
        if rows:
            title, fn = report.SECTIONS[suite]
            (out / f"{suite}.md").write_text(f"### {title}\n\n{fn(rows, bench)}\n")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    info["load average at end (1/5/15 min)"] = load_average()
    results["seconds"] = round(time.perf_counter() - started)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(out, results, bench)
    _log(f"bench done in {time.perf_counter() - started:.0f} s: {out / 'benchmarks.md'}")
    return out


def write_report(out: Path, results: dict[str, Any], bench: BenchConfig) -> Path:
    """``benchmarks.md`` and the plots from a results dict (also for re-rendering a results.json)."""
    from lw_lightning.plots import accuracy_chance, plot_accuracy

    from . import report

    plots = []
    if results.get("images"):
        plots.append(report.plot_speedup(results["images"], bench, out / "speedup_vs_resolution.png"))
    if results.get("accuracy"):
        plots.append(
            plot_accuracy(results["accuracy"], out / "accuracy_vs_flops.png", chance=accuracy_chance(results["accuracy"]))
        )
    info = results["machine"]
    lines = [
        f"## Benchmarks on {info.get('gpu', info['cpu'])}",
        "",
        f"`{results['command']}` — {results['date']}, "
        f"{results.get('seconds', '?')} s, median of {bench.repeats} repeats after {bench.warmup} warm-up calls.",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
    for suite in bench.suites:
        if results.get(suite):
            title, fn = report.SECTIONS[suite]
            lines += [f"### {title}", "", fn(results[suite], bench), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots if p]
    path = out / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_suite(name: str, bench: BenchConfig, env, out: Path) -> list[dict[str, Any]]:
    if name == "images":
        from .images import run_images

        return run_images(bench.images, env, _log)
    if name == "video":
        from .video import run_video

        return run_video(bench.video, env, _log)
    if name == "data":
        from .data import run_data

        return run_data(bench.data, env, _log, out)
    if name == "overhead":
        from .overhead import run_overhead

        return run_overhead(bench.overhead, env, _log)
    from .accuracy import run_accuracy

    return run_accuracy(bench.accuracy, env, _log)
