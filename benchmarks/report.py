"""Markdown tables and PNG plots from the suites' result rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import fmt_bytes, fmt_time
from .config import BenchConfig

NAN = float("nan")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _x(v: float) -> str:
    return "—" if v != v else f"{v:.1f}×"


def _g(flops: int) -> str:
    """GMACs with three significant digits at least."""
    g = flops / 2e9
    return f"{g:,.1f}" if g >= 100 else f"{g:.3g}"


def _rate(items: int, seconds: float) -> str:
    if seconds != seconds:
        return "—"
    r = items / seconds
    return f"{r:,.1f}" if r >= 100 else f"{r:.3g}"


def images_md(rows: list[dict[str, Any]], cfg: BenchConfig) -> str:
    out = []
    for group in cfg.images.groups:
        grp = [r for r in rows if r["size"] == group.size]
        if not grp:
            continue
        prefixes = [""] + (["compiled_"] if group.compile else [])
        for prefix in prefixes:
            full = grp[0]
            b1, bt = group.batch_sizes[0], group.batch_sizes[-1] if not prefix else group.batch_sizes[0]
            if prefix:
                grp = [r for r in grp if f"{prefix}infer_b{b1}_s" in r]
            header = ["model", "tokens", "GMACs", "FLOP ratio", f"latency b={b1}", "speedup"]
            if bt != b1:
                header += [f"img/s b={bt}", "speedup"]
            train = group.train_batch and not prefix
            if train:
                header += [f"train img/s b={group.train_batch}", "speedup"]
            mem = group.memory and train
            if mem:
                header += ["activations (train)", "ratio"]
            table = []
            for r in grp:
                lat = r.get(f"{prefix}infer_b{b1}_s", NAN)
                line = [
                    r["model"],
                    str(r["tokens"]),
                    _g(r["flops"]),
                    _x(full["flops"] / r["flops"]),
                    fmt_time(lat),
                    _x(full.get(f"{prefix}infer_b{b1}_s", NAN) / lat),
                ]
                if bt != b1:
                    t = r.get(f"{prefix}infer_b{bt}_s", NAN)
                    line += [_rate(bt, t), _x(full.get(f"{prefix}infer_b{bt}_s", NAN) / t)]
                if train:
                    t = r.get("train_s", NAN)
                    line += [_rate(group.train_batch, t), _x(full.get("train_s", NAN) / t)] if "train_s" in r else ["—", "—"]
                if mem:
                    a = r.get("act_bytes")
                    line += [fmt_bytes(a), _x(full["act_bytes"] / a) if a and full.get("act_bytes") else "—"]
                table.append(line)
            title = f"#### {group.size}×{group.size}" + (f" — torch.compile ({group.compile})" if prefix else "")
            out.append(f"{title}\n\n{_table(header, table)}")
            if any(r.get("train_peak_bytes") for r in grp) and not prefix:
                peaks = [
                    [r["model"], fmt_bytes(r.get("train_peak_bytes")), fmt_bytes(r.get("infer_peak_bytes"))]
                    for r in grp
                    if "act_bytes" in r
                ]
                out.append(
                    _table(["model", f"CUDA peak, train step b={group.train_batch}", f"CUDA peak, inference b={bt}"], peaks)
                )
            errors = [f"- {r['model']}: {k} {v}" for r in grp for k, v in r.items() if k.endswith("_error")]
            if errors:
                out.append("Failures:\n" + "\n".join(errors))
    return "\n\n".join(out)


def video_md(rows: list[dict[str, Any]], cfg: BenchConfig) -> str:
    suite = cfg.video
    b1, bt = suite.batch_sizes[0], suite.batch_sizes[-1]
    out = []
    for preset in suite.presets:
        grp = [r for r in rows if r["preset"] == preset]
        if len(grp) != 2:
            continue
        base, _tl = grp
        prefixes = [""] + (["compiled_"] if suite.compile else [])
        for prefix in prefixes:
            header = [
                "model",
                "tokens (first / last block)",
                "GMACs",
                "FLOP ratio",
                f"clips/s b={b1}",
                "ratio",
                "ratio / FLOP ratio",
            ]
            if bt != b1 and not prefix:
                header += [f"clips/s b={bt}", "ratio", "ratio / FLOP ratio"]
            train = "train_s" in base and not prefix
            if train:
                header += [f"train clips/s b={suite.train_batch}", "ratio", "ratio / FLOP ratio", "activations (train)"]
            table = []
            for r in grp:
                fr = base["flops"] / r["flops"]
                line = [r["name"], f"{r['tokens_in']} / {r['tokens_out']}", _g(r["flops"]), _x(fr)]
                for b in [b1] if bt == b1 or prefix else [b1, bt]:
                    t, t0 = r.get(f"{prefix}infer_b{b}_s", NAN), base.get(f"{prefix}infer_b{b}_s", NAN)
                    line += [_rate(b, t), _x(t0 / t), f"{t0 / t / fr:.2f}"]
                if train:
                    t, t0 = r.get("train_s", NAN), base["train_s"]
                    line += [_rate(suite.train_batch, t), _x(t0 / t), f"{t0 / t / fr:.2f}", fmt_bytes(r.get("act_bytes"))]
                table.append(line)
            t, h, w = base["tubelet"]
            title = f"#### ViViT-{preset}, {base['num_frames']}×{base['img_size']}², tubelet {t}×{h}×{w}" + (
                f" — torch.compile ({suite.compile})" if prefix else ""
            )
            out.append(f"{title}\n\n{_table(header, table)}")
    return "\n\n".join(out)


def data_md(rows: list[dict[str, Any]], cfg: BenchConfig) -> str:
    suite = cfg.data
    cases = [(r, w) for r in suite.readers for w in suite.workers]
    header = ["clip"] + [f"{'plain decord' if r == 'plain' else r} {w} worker{'s' if w > 1 else ''}" for r, w in cases]
    # the loader with each fast decoder against plain decord, per worker count
    ratios = [(d, w) for d in ("decord", "torchcodec") if "plain" in suite.readers and d in suite.readers for w in suite.workers]
    header += [f"loader ({d}) / plain decord, {w} worker{'s' if w > 1 else ''}" for d, w in ratios]
    if suite.model_preset:
        header += ["model training clips/s", "loader / model (best)"]
    table = []
    for r in rows:
        line = [r["clip"]] + [f"{r[f'{rd}_w{w}']:.2f}" for rd, w in cases]
        line += [f"{r[f'{d}_w{w}'] / r[f'plain_w{w}']:.2f}" for d, w in ratios]
        if suite.model_preset:
            best = max((r[f"{rd}_w{w}"] for rd, w in cases if rd != "plain"), default=float("nan"))
            line += [f"{r['model_clips_s']:.3f} ({r['model']}, b={suite.model_batch})", f"{best / r['model_clips_s']:.1f}×"]
        table.append(line)
    note = (
        f"Clips/s of the Kinetics training loader (workers: decode + scale-jitter crop, uint8 out, batch {suite.batch_size}) next to "
        f"plain decord decoding the same frame indices in the same workers; {suite.videos} generated {suite.seconds:g}-s videos, {suite.width}×{suite.height} "
        f"at {suite.fps} fps, H.264, keyframe every {suite.gop} frames; median of {suite.rounds} interleaved rounds. The model's rate "
        "includes the device half of the pipeline (flip, colour jitter, colour drop, normalise). "
        "A loader/model ratio above 1 means loading keeps up with training on this machine."
    )
    return note + "\n\n" + _table(header, table)


def overhead_md(rows: list[dict[str, Any]], cfg: BenchConfig) -> str:
    table = [
        [
            r["model"],
            str(r["k"]),
            str(r["batch_size"]),
            f"{r['lightning_steps_s']:.2f}",
            f"{r['plain_steps_s']:.2f}",
            f"{r['slowdown'] * 100:+.1f}%"
            if r["slowdown"] is not None
            else f"not measured ({r['steps']} timed steps < {r['min_steps']})",
            ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["lightning_all"], r["plain_all"])),
        ]
        for r in rows
    ]
    return _table(
        ["model", "k", "batch", "Lightning steps/s", "plain loop steps/s", "Lightning step-time overhead", "rounds (L/plain)"],
        table,
    )


def accuracy_md(rows: list[dict[str, Any]], cfg: BenchConfig | None = None) -> str:
    table = [
        [
            r.get("label", r["model"]),
            r["size"],
            str(r["k"]),
            str(r["tokens"]),
            f"{r['flops'] / 2e9:.3f}",
            f"{r['acc1'] * 100:.2f}",
            f"{r['samples']} ({r.get('split', 'val')})",
        ]
        for r in rows
    ]
    return _table(["model", "input", "k", "tokens", "GMACs", "top-1 %", "samples"], table)


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no cheaper-or-equal row matches in accuracy: sorted by FLOPs, each strictly more
    accurate than every row before it (what wins at each FLOP budget)."""
    front: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: (r["flops"], -r["acc1"])):
        if not front or r["acc1"] > front[-1]["acc1"]:
            front.append(r)
    return front


def compare_md(
    rows: list[dict[str, Any]],
    latency_batch: int,
    train_batch: int,
    tokens: str = "patch",
    item: str = "img",
    flops: str = "GMACs",
) -> str:
    """Table of a method comparison (``python -m benchmarks.compare``, ``benchmarks.compare_video``)
    and its Pareto front.

    One row per variant: accuracy, GMACs and the timings of one interleaved run; ratios are
    against the first row (the full-resolution model). ``tokens``, ``item`` and ``flops`` name the
    columns (``"tubelet"``, ``"clips"``, ``"GMACs / clip"`` for video)."""
    full = rows[0]
    header = [
        "method",
        "variant",
        f"{tokens} tokens per block",
        flops,
        "FLOP ratio",
        "test top-1",
        f"latency b={latency_batch}",
        "speedup",
        f"train {item}/s b={train_batch}",
        "speedup",
        f"activations (train b={train_batch})",
        "ratio",
    ]
    table = []
    for r in rows:
        lat, tr, act = r.get("latency_s", NAN), r.get("train_s", NAN), r.get("act_bytes")
        table.append(
            [
                r["method"],
                r["variant"],
                r["token_plan"],
                _g(r["flops"]),
                _x(full["flops"] / r["flops"]),
                f"{r['acc1'] * 100:.1f}%",
                fmt_time(lat),
                _x(full.get("latency_s", NAN) / lat),
                _rate(train_batch, tr),
                _x(full.get("train_s", NAN) / tr),
                fmt_bytes(act),
                _x(full["act_bytes"] / act) if act and full.get("act_bytes") else "—",
            ]
        )
    front = pareto_front(rows)
    steps = [f"{r['method']} {r['variant']} ({_g(r['flops'])} GMACs, {r['acc1'] * 100:.1f}%)" for r in front]
    lines = [
        _table(header, table),
        "",
        "Best accuracy at each GMACs budget (the Pareto front: each entry is the cheapest variant "
        "more accurate than everything cheaper): " + " → ".join(steps) + ".",
    ]
    errors = [f"- {r['method']} {r['variant']}: {k} {v}" for r in rows for k, v in r.items() if k.endswith("_error")]
    if errors:
        lines += ["", "Failures:", *errors]
    return "\n".join(lines)


def plot_speedup(rows: list[dict[str, Any]], cfg: BenchConfig, path: Path) -> Path | None:
    """:func:`speedup_figure` saved as a PNG; None without LookWhere rows."""
    import matplotlib.pyplot as plt

    fig = speedup_figure(rows, cfg)
    if fig is None:
        return None
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: line style and marker of each measure of :func:`speedup_figure`; the marker tells measures
#: apart where a k has a single point (no line to style)
SPEEDUP_STYLES = {"flops": (":", "s"), "latency": ("-", "o"), "throughput": ("--", "^")}


def _time_label(batches: set[int], role: str) -> str:
    return f"time b={batches.pop()}" if len(batches) == 1 else f"time, {role} batch"


def speedup_figure(rows: list[dict[str, Any]], cfg: BenchConfig) -> Any:
    """Speedup of LookWhere over the full-res ViT vs resolution (FLOPs, latency, throughput); None
    without LookWhere rows. Colour is k, marker and line style the measure, each with its own
    legend. A k measured at one resolution is a point with no line, and then the measures'
    legend shows no line styles either (they would say nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    series: dict[Any, dict[str, list[tuple[int, float]]]] = {}
    latency_b, throughput_b = set(), set()
    for group in cfg.images.groups:
        grp = [r for r in rows if r["size"] == group.size]
        if not grp:
            continue
        full = grp[0]
        b1, bt = group.batch_sizes[0], group.batch_sizes[-1]
        latency_b.add(b1)
        for r in grp[1:]:
            if "embed all" in r["model"]:
                continue
            s = series.setdefault(r["k"], {})
            s.setdefault("flops", []).append((group.size, full["flops"] / r["flops"]))
            s.setdefault("latency", []).append((group.size, full.get(f"infer_b{b1}_s", NAN) / r.get(f"infer_b{b1}_s", NAN)))
            if bt != b1:
                throughput_b.add(bt)
                s.setdefault("throughput", []).append(
                    (group.size, full.get(f"infer_b{bt}_s", NAN) / r.get(f"infer_b{bt}_s", NAN))
                )
    if not series:
        return None
    labels = {
        "flops": "FLOPs",
        "latency": _time_label(latency_b, "latency"),
        "throughput": _time_label(throughput_b, "throughput"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 4))
    # counts before fractions, each ascending (a config may mix them: 128 at 224 px, 5% above)
    ks = sorted(series, key=lambda k: (isinstance(k, float), k))
    kinds = [kind for kind in SPEEDUP_STYLES if any(kind in series[k] for k in ks)]
    lines = False
    for i, k in enumerate(ks):
        for kind, pts in series[k].items():
            pts = sorted(pts)
            line, marker = SPEEDUP_STYLES[kind]
            lines |= len(pts) > 1
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], linestyle=line if len(pts) > 1 else "none", marker=marker, color=f"C{i}"
            )
    k_legend = ax.legend(
        [Patch(color=f"C{i}") for i in range(len(ks))],
        [f"k={k:.0%}" if isinstance(k, float) else f"k={k}" for k in ks],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),  # beside the axes: no point hidden under a legend
        title="LookWhere",
        title_fontsize=7,
    )
    ax.add_artist(k_legend)
    ax.legend(
        [
            Line2D([], [], color="0.3", marker=SPEEDUP_STYLES[kind][1], linestyle=SPEEDUP_STYLES[kind][0] if lines else "none")
            for kind in kinds
        ],
        [labels[kind] for kind in kinds],
        fontsize=7,
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        title="speedup in",
        title_fontsize=7,
    )
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel("speedup over full-res ViT (×)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"LookWhere-{cfg.images.preset} vs ViT-{cfg.images.preset}/14")
    fig.tight_layout()
    return fig


SECTIONS = {
    "images": ("LookWhere vs full-resolution ViT", images_md),
    "video": ("ViViT with vs without TokenLearner", video_md),
    "data": ("Kinetics data loading vs the video model's training rate", data_md),
    "overhead": ("Lightning vs a plain PyTorch loop", overhead_md),
    "accuracy": ("Accuracy vs FLOPs", accuracy_md),
}
