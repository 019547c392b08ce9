"""Result plots shared by the demo and the benchmarks: top-1 accuracy vs GMACs per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_accuracy(rows: list[dict[str, Any]], path: Path, title: str | None = None, chance: float | None = None) -> Path | None:
    """Top-1 vs GMACs per image saved as a PNG (see :func:`accuracy_figure`); None without rows."""
    if not rows:
        return None
    import matplotlib.pyplot as plt

    fig = accuracy_figure(rows, title, chance)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_chance(rows: list[dict[str, Any]]) -> float | None:
    """``1 / num_classes`` when every row records the same class count (older results: None)."""
    counts = {r.get("num_classes") for r in rows}
    return 1.0 / counts.pop() if len(counts) == 1 and None not in counts else None


def accuracy_figure(rows: list[dict[str, Any]], title: str | None = None, chance: float | None = None) -> Any:
    """The matplotlib figure of :func:`plot_accuracy`: one line per ``label`` (LookWhere over k,
    or any rows that carry a ``note``, e.g. TokenLearner-ViT over insertion points), one star per
    full-res ViT. Points are annotated with their ``note``, else ``k=<tokens>``. ``chance`` (a
    fraction, e.g. ``1 / num_classes``) adds a labelled dashed horizontal line, the accuracy of
    guessing that the curves are read against."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        runs.setdefault(r.get("label", r["model"]), []).append(r)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (label, pts) in enumerate(runs.items()):
        pts = sorted(pts, key=lambda r: r["flops"])
        x, y = [r["flops"] / 2e9 for r in pts], [r["acc1"] * 100 for r in pts]
        full = all(r["k"] is None and not r.get("note") for r in pts)
        ax.plot(
            x,
            y,
            marker="*" if full else "o",
            markersize=11 if full else 5,
            linestyle="none" if full else "-",
            color=f"C{i}",
            label=label,
        )
        for r in pts:
            note = r.get("note") or (f"k={r['tokens']}" if r["k"] is not None else None)
            if note:
                ax.annotate(note, (r["flops"] / 2e9, r["acc1"] * 100), fontsize=7, xytext=(3, -9), textcoords="offset points")
    if chance is not None:
        ax.axhline(chance * 100, color="0.4", linestyle="--", linewidth=1, label=f"chance ({chance * 100:.3g}%)")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("GMACs per image (log)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
