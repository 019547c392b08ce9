"""One markdown table from a ``benchmarks/gpu_suite.sh`` run directory (``OUT/gpu_suite.md``).

    python benchmarks/gpu_suite_report.py OUT [--dry-run]

Reads ``OUT/steps.tsv`` (step, exit status, seconds, limit), the bench suites' ``results.json``
(``OUT/{images,video,data}``) and the logs of ``pytest -m gpu`` and ``amp_check.py``. A step that
failed or ran out of time still gets its row, with the reason, so a partial run is readable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NAN = float("nan")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None or seconds != seconds else f"{seconds * 1e3:.1f} ms"


def _rate(items: int, seconds: float | None) -> str:
    return "—" if not seconds or seconds != seconds else f"{items / seconds:,.1f}/s"


def _x(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "—"
    return f"{a / b:.2f}×"


def _batches(row: dict[str, Any]) -> list[int]:
    return sorted(int(m.group(1)) for k in row if (m := re.fullmatch(r"infer_b(\d+)_s", k)))


def image_rows(results: dict[str, Any]) -> list[list[str]]:
    """LookWhere vs full ViT per input size: latency at the smallest batch, throughput at the largest, training."""
    out = []
    rows = results.get("images") or []
    for size in sorted({r["size"] for r in rows}):
        grp = [r for r in rows if r["size"] == size]
        full = next((r for r in grp if r.get("arch") == "vit"), grp[0])
        for r in grp:
            bs = _batches(r)
            if not bs:
                continue
            b1, bt = bs[0], bs[-1]
            lat, thr = r.get(f"infer_b{b1}_s"), r.get(f"infer_b{bt}_s")
            result = f"b={b1}: {_ms(lat)}; b={bt}: {_rate(bt, thr)}"
            vs = f"latency {_x(full.get(f'infer_b{b1}_s'), lat)}, throughput {_x(full.get(f'infer_b{bt}_s'), thr)}"
            if "train_s" in r:
                result += f"; train {_ms(r['train_s'])}/step"
                vs += f", train {_x(full.get('train_s'), r['train_s'])}"
            out.append(["images", f"{r['model']} @ {size}²", result, f"{vs} vs full ViT"])
    return out


def video_rows(results: dict[str, Any]) -> list[list[str]]:
    """ViViT with vs without TokenLearner: training clips/s (from the step time) and inference latency."""
    out = []
    rows = results.get("video") or []
    for preset in sorted({r["preset"] for r in rows}):
        grp = [r for r in rows if r["preset"] == preset]
        base = next((r for r in grp if not r.get("num_tokens")), grp[0])
        for r in grp:
            bs = _batches(r)
            lat = r.get(f"infer_b{bs[0]}_s") if bs else None
            cells = [f"infer b={bs[0]}: {_ms(lat)}" if bs else "infer —"]
            vs = [f"infer {_x(base.get(f'infer_b{bs[0]}_s'), lat)}" if bs else ""]
            train = r.get("train_s")
            if train:
                b = int(r.get("train_batch") or 1)
                cells.append(f"train {r['num_frames']}×{r['img_size']}², b={b}: {_rate(b, train).replace('/s', ' clips/s')}")
                vs.append(f"train {_x(base.get('train_s'), train)}")
            out.append(["video", r["name"], "; ".join(cells), ", ".join(v for v in vs if v) + " vs no TokenLearner"])
    return out


def data_rows(results: dict[str, Any]) -> list[list[str]]:
    """Loader clips/s per worker count, against plain decord (same workers, same frames) and the model."""
    out = []
    for r in results.get("data") or []:
        cases = sorted({(m.group(1), int(m.group(2))) for k in r if (m := re.fullmatch(r"(decord|torchcodec)_w(\d+)", k))})
        for decoder, w in cases:
            loader, plain = r.get(f"{decoder}_w{w}"), r.get(f"plain_w{w}")
            vs = [f"{_x(loader, plain)} plain decord"] if plain else []
            if r.get("model_clips_s"):
                vs.append(f"{_x(loader, r['model_clips_s'])} {r['model']} training ({r['model_clips_s']:.2f} clips/s)")
            case = f"{r['clip']}, {decoder}, {w} worker{'s' if w > 1 else ''}"
            out.append(["loader", case, f"{loader:.2f} clips/s", ", ".join(vs) or "—"])
    return out


def pytest_rows(log: Path) -> list[list[str]]:
    text = log.read_text() if log.is_file() else ""
    summary = [ln.strip("= ") for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error|deselected)", ln)]
    return [["pytest -m gpu", "tests marked gpu", summary[-1] if summary else "no summary line", "—"]]


def amp_rows(log: Path) -> list[list[str]]:
    """Per task: the loss under each precision and its relative difference to fp32, then the verdict."""
    lines = (log.read_text() if log.is_file() else "").splitlines()
    verdict = next((ln for ln in reversed(lines) if ln.startswith(("all finite", "FAILED"))), "no verdict line")
    rows = []
    header = next((i for i, ln in enumerate(lines) if ln.startswith("task")), None)
    if header is not None:
        tokens = lines[header].split()[1:]
        precisions = tokens[: tokens.index("rel")] if "rel" in tokens else tokens
        for ln in lines[header + 1 :]:
            parts = ln.split()
            if len(parts) != 2 * len(precisions):  # task + P losses + (P-1) relative differences
                break
            losses, rel = parts[1 : 1 + len(precisions)], parts[1 + len(precisions) :]
            rows.append(
                [
                    "amp_check",
                    parts[0],
                    ", ".join(f"{p} {v}" for p, v in zip(precisions, losses)),
                    ", ".join(f"{p} {v}" for p, v in zip(precisions[1:], rel)) + " relative to fp32",
                ]
            )
    return rows + [["amp_check", "verdict", verdict, "—"]]


def read_steps(out: Path) -> dict[str, tuple[int, int, int]]:
    steps = {}
    path = out / "steps.tsv"
    for ln in path.read_text().splitlines() if path.is_file() else []:
        name, rc, secs, limit = ln.split("\t")
        steps[name] = (int(rc), int(secs), int(limit))
    return steps


def status(steps: dict[str, tuple[int, int, int]], name: str) -> str:
    if name not in steps:
        return "not run"
    rc, secs, limit = steps[name]
    if rc in (124, 137):
        return f"TIMED OUT after {secs} s (limit {limit} s)"
    return f"ok, {secs} s" if rc == 0 else f"FAILED (exit {rc}), {secs} s"


def render(out: Path, dry_run: bool = False) -> str:
    steps = read_steps(out)
    machine: dict[str, Any] = {}
    table = [["step", "", status(steps, s), f"log: {s}.log"] for s in ("images", "video", "data", "pytest_gpu", "amp_check")]
    for suite, fn in (("images", image_rows), ("video", video_rows), ("data", data_rows)):
        path = out / suite / "results.json"
        if path.is_file():
            results = json.loads(path.read_text())
            machine = machine or results.get("machine", {})
            table += fn(results)
    table += pytest_rows(out / "pytest_gpu.log") + amp_rows(out / "amp_check.log")
    device = machine.get("gpu") or machine.get("cpu", "unknown machine")
    title = f"## GPU suite{' (DRY RUN: CPU, tiny sizes — not a measurement)' if dry_run else ''}: {device}"
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    total = sum(s[1] for s in steps.values())
    lines = [
        title,
        "",
        f"`bash benchmarks/gpu_suite.sh{' --dry-run' if dry_run else ''}` — {date}, {total} s in the steps; "
        f"torch {machine.get('torch', '?')}, {machine.get('precision', '?')}.",
        "",
        "| part | case | result | compared |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the gpu_suite.sh output directory")
    parser.add_argument("--dry-run", action="store_true", help="label the table as a dry run")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        print(f"error: {args.out} is not a gpu_suite.sh output directory", file=sys.stderr)
        return 2
    md = render(args.out, args.dry_run)
    (args.out / "gpu_suite.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
