# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Efficiency trade-offs: full ViT vs LookWhere vs TokenLearner
#
# Three ways to pay for fewer tokens:
#
# * the **full-resolution ViT** runs every block on all N patches;
# * **LookWhere** runs a shallow selector on a low-resolution copy, then the full-depth extractor on only the
#   k patches it picked (cost ∝ k, plus a small fixed selector cost);
# * **TokenLearner-ViT** runs the first L blocks on all N patches, then replaces them by S learned tokens
#   for the remaining blocks (cost ∝ L·N + (depth − L)·S).
#
# This notebook shows FLOPs, latency and training memory of the three **vs input resolution** and **vs
# k / insertion point**. With `BENCH_RESULTS` it reads the `results.json` of a benchmark run
# (`python -m benchmarks bench=cpu` from the repository root, or `bench=gpu` on a GPU); otherwise it
# measures small sizes of the `tiny` preset here, with the same measuring code as the bench
# (the repository's `benchmarks/`: FLOPs with `torch.utils.flop_counter`, interleaved repeats, saved-for-backward
# bytes of a training step; not installed with `lw_lightning`, so the kernel needs the repository root on
# `PYTHONPATH`, as `python -m lw_lightning.notebooks` gives it). Here the fastest repeat counts, the least disturbed by other jobs on a
# shared machine (the bench reports medians).

# %% tags=["parameters"]
FIGURE_DIR = None  # folder for the summary figure (nb_efficiency_tradeoffs.png); None: shown only
BENCH_RESULTS = None  # results.json of `python -m benchmarks bench=NAME`; None: measure here
PRESET = "tiny"  # model preset measured here
SIZES = [112, 224, 336]  # input resolutions measured here
KS = [0.1, 0.25]  # LookWhere k (fractions of the patches) in the resolution sweep
TL_TOKENS = 8  # TokenLearner's S
TL_LOC = 0.25  # TokenLearner's insertion point (fraction of the depth) in the resolution sweep
SWEEP_SIZE = 224  # resolution of the k / insertion-point sweep
SWEEP_KS = [0.05, 0.1, 0.25, 0.5, 1.0]
SWEEP_LOCS = [0.0, 0.25, 0.5, 0.75]
TRAIN_BATCH = 2  # batch of the timed training step and the memory measurement
REPEATS = 5  # timed repeats after one warm-up call; the fastest counts (least disturbed by other jobs)
THREADS = (
    1  # torch threads while timing: 1 gives steady numbers on a shared machine (as conf/bench/cpu.yaml); None: torch's default
)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from IPython.display import Markdown, display
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks.common import Case, fmt_bytes, fmt_time, make_env, time_interleaved
from benchmarks.images import count_variant_flops, forward_fn, train_activation_bytes, train_step_fn
from lw_lightning.models.config import model_config, resolve_k
from lw_lightning.models.lookwhere import build_model

env = make_env("cpu", "fp32", threads=THREADS, warmup=1, repeats=REPEATS)
print(f"measuring on {env.device} with {torch.get_num_threads()} threads")

# %% [markdown]
# ## The variants
#
# A variant is a model configuration: `arch` plus the fields that set its token budget. One helper
# measures any of them at one resolution and returns a row with the same keys the bench writes
# (`flops`, `latency_s`, `train_s`, `act_bytes`).

# %%
METHODS = {"vit": "full ViT", "lookwhere": "LookWhere", "tokenlearner": "TokenLearner-ViT"}
COLOURS = {"full ViT": "black", "LookWhere": "tab:blue", "TokenLearner-ViT": "tab:orange"}


def variants(ks, locs):
    out = [dict(arch="vit", k=None, fields={})]
    out += [dict(arch="lookwhere", k=k, fields={}) for k in ks]
    out += [dict(arch="tokenlearner", k=None, fields=dict(tokenlearner_loc=loc, tokenlearner_tokens=TL_TOKENS)) for loc in locs]
    return out


def label(v, n):
    if v["arch"] == "lookwhere":
        return f"LookWhere k={v['k']:.0%}"
    if v["arch"] == "tokenlearner":
        return f"TokenLearner S={TL_TOKENS} at {v['fields']['tokenlearner_loc']:.0%} depth"
    return "full ViT"


def measure(size, vs, num_classes=10):
    """FLOPs, latency (b=1), training step time and activation memory of the variants ``vs``
    at ``size``, timed interleaved so a load change hits every variant alike."""
    n = (size // 14) ** 2
    torch.manual_seed(0)
    x1 = torch.randn(1, 3, size, size)
    xt, yt = torch.randn(TRAIN_BATCH, 3, size, size), torch.randint(num_classes, (TRAIN_BATCH,))
    rows, cases = [], []
    for v in vs:
        model = build_model(model_config(PRESET, arch=v["arch"], img_size=[size, size], **v["fields"])).eval()
        if v["arch"] == "lookwhere":
            model.selector.requires_grad_(False)  # the fine-tuning protocol: the selector is frozen
        head = nn.Linear(model.embed_dim, num_classes)
        fwd = forward_fn(model, v["k"])
        row = dict(
            size=size,
            method=METHODS[v["arch"]],
            label=label(v, n),
            arch=v["arch"],
            k=v["k"],
            patches=n,
            loc=v["fields"].get("tokenlearner_loc"),
            flops=count_variant_flops(PRESET, size, v["arch"], v["k"], **v["fields"]),
            tokens=n if v["k"] is None else resolve_k(v["k"], n),
        )

        def infer(fwd=fwd, model=model):
            model.eval()
            with torch.inference_mode():
                fwd(x1)

        row["_infer"] = Case(f"{row['label']} @{size} | infer b=1", infer)
        row["_train"] = Case(
            f"{row['label']} @{size} | train b={TRAIN_BATCH}", train_step_fn(model, head, v["k"], xt, yt, env), items=TRAIN_BATCH
        )
        row["act_bytes"] = train_activation_bytes(model, head, v["k"], xt, yt, env)
        cases += [row["_infer"], row["_train"]]
        rows.append(row)
    time_interleaved(cases, env, log=lambda msg: None)
    for row in rows:
        row["latency_s"], row["train_s"] = min(row.pop("_infer").times), min(row.pop("_train").times)
    return rows


# %% [markdown]
# ## Measure, or read a benchmark's results
#
# A bench `results.json` holds an `images` list (full ViT and LookWhere per resolution, see
# `conf/bench/*.yaml`) and a `video` list (ViViT with and without TokenLearner). TokenLearner-ViT image
# rows are measured here when the file has none (their FLOPs at the bench's own sizes are counted on
# meta tensors, which costs nothing).


# %%
def from_bench(path):
    results = json.loads(Path(path).read_text())
    rows = []
    for r in results.get("images", []):
        if "embed all" in r["model"] or "compiled" in r["model"]:
            continue
        batches = sorted(int(key[len("infer_b") : -2]) for key in r if key.startswith("infer_b") and key.endswith("_s"))
        n = (r["size"] // 14) ** 2
        method = METHODS.get(r["arch"], r["arch"])
        name = (
            "full ViT"
            if r["arch"] == "vit"
            else (f"LookWhere k={r['k']:.0%}" if isinstance(r["k"], float) else f"LookWhere k={r['tokens']}")
        )
        rows.append(
            dict(
                size=r["size"],
                method=method,
                label=name,
                arch=r["arch"],
                k=r["k"],
                patches=n,
                loc=None,
                flops=r["flops"],
                tokens=r["tokens"],
                latency_s=r.get(f"infer_b{batches[0]}_s", float("nan")) if batches else float("nan"),
                train_s=r.get("train_s", float("nan")),
                act_bytes=r.get("act_bytes"),
            )
        )
    return results, rows


video_rows = []
if BENCH_RESULTS:
    results, rows = from_bench(BENCH_RESULTS)
    video_rows = results.get("video", [])
    print(
        f"read {len(rows)} image rows and {len(video_rows)} video rows from {BENCH_RESULTS}: {results['machine'].get('gpu', results['machine']['cpu'])}"
    )
    sizes = sorted({r["size"] for r in rows})
    bench_preset = next(
        (p for p in ("tiny", "small", "base") if f"LookWhere-{p}" in json.dumps(results.get("images", []))), PRESET
    )
    PRESET = bench_preset
    if not any(r["arch"] == "tokenlearner" for r in rows):
        for size in sizes:  # FLOPs only: timing ViT-B on a CPU here would take minutes
            fields = dict(tokenlearner_loc=TL_LOC, tokenlearner_tokens=TL_TOKENS)
            flops = count_variant_flops(PRESET, size, "tokenlearner", None, **fields)
            rows.append(
                dict(
                    size=size,
                    method="TokenLearner-ViT",
                    label=f"TokenLearner S={TL_TOKENS} at {TL_LOC:.0%} depth",
                    arch="tokenlearner",
                    k=None,
                    patches=(size // 14) ** 2,
                    loc=TL_LOC,
                    flops=flops,
                    tokens=TL_TOKENS,
                    latency_s=float("nan"),
                    train_s=float("nan"),
                    act_bytes=None,
                )
            )
    SWEEP_SIZE = max(sizes)
    sweep = [r for r in rows if r["size"] == SWEEP_SIZE]
    for loc in SWEEP_LOCS:  # FLOPs of the insertion points at the largest size
        fields = dict(tokenlearner_loc=loc, tokenlearner_tokens=TL_TOKENS)
        if loc != TL_LOC:
            sweep.append(
                dict(
                    size=SWEEP_SIZE,
                    method="TokenLearner-ViT",
                    label=f"TokenLearner at {loc:.0%}",
                    arch="tokenlearner",
                    k=None,
                    patches=(SWEEP_SIZE // 14) ** 2,
                    loc=loc,
                    flops=count_variant_flops(PRESET, SWEEP_SIZE, "tokenlearner", None, **fields),
                    tokens=TL_TOKENS,
                    latency_s=float("nan"),
                    train_s=float("nan"),
                    act_bytes=None,
                )
            )
else:
    rows = [row for size in SIZES for row in measure(size, variants(KS, [TL_LOC]))]
    sweep = measure(SWEEP_SIZE, variants(SWEEP_KS, SWEEP_LOCS))
    print(f"measured {len(rows) + len(sweep)} variants of the {PRESET} preset")


# %%
def table(rows):
    full = {r["size"]: r for r in rows if r["arch"] == "vit"}
    lines = [
        f"| size | variant | tokens per block | MFLOPs | FLOP ratio | latency b=1 | speedup | train step b={TRAIN_BATCH} | activations (train) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["size"], -r["flops"])):
        f = full.get(r["size"])
        ratio = f"{f['flops'] / r['flops']:.1f}×" if f else "—"
        speed = f"{f['latency_s'] / r['latency_s']:.1f}×" if f and r["latency_s"] == r["latency_s"] else "—"
        lat = fmt_time(r["latency_s"])
        lines.append(
            f"| {r['size']} | {r['label']} | {r['tokens']} of {r['patches']} | {r['flops'] / 1e6:,.0f} | {ratio} | {lat} | {speed} | "
            f"{fmt_time(r['train_s'])} | {fmt_bytes(r['act_bytes'])} |"
        )
    return "\n".join(lines)


display(Markdown("### vs resolution\n\n" + table(rows)))
display(Markdown(f"### vs k and insertion point at {SWEEP_SIZE} px\n\n" + table(sweep)))

# %% [markdown]
# ## Plots
#
# Top row: cost vs resolution (log–log; the full ViT's attention makes its FLOPs grow faster than N,
# LookWhere's extractor cost stays ∝ k = a fixed fraction of N, and TokenLearner pays the full price
# only for the blocks before L). Bottom row: cost at one resolution vs the kept fraction k (LookWhere)
# and the insertion point L (TokenLearner), normalised by the full ViT.

# %%
plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
METRICS = [
    ("flops", "GFLOPs per image", 1e-9),
    ("latency_s", "latency, batch 1 (ms)", 1e3),
    ("act_bytes", f"activations, train b={TRAIN_BATCH} (MiB)", 2**-20),
]
fig, axes = plt.subplots(2, 3, figsize=(12, 7.2))
for ax, (key, title, scale) in zip(axes[0], METRICS):
    for name in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r["size"], r[key] * scale) for r in rows if r["label"] == name and r[key] is not None and r[key] == r[key])
        if not pts:
            continue
        method = next(r["method"] for r in rows if r["label"] == name)
        dashed = method == "LookWhere" and name.endswith(f"{max(KS):.0%}")
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            color=COLOURS[method],
            linestyle="--" if dashed else "-",
            label=name,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes_here = sorted({r["size"] for r in rows})
    ax.set_xticks(sizes_here, [str(s) for s in sizes_here])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("input resolution (px)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
axes[0, 0].legend(fontsize=7, frameon=False)

full = next(r for r in sweep if r["arch"] == "vit")
for ax, (key, title, _) in zip(axes[1], METRICS):
    if full[key] is None or full[key] != full[key]:
        ax.set_axis_off()
        continue
    lw = sorted((r["k"], full[key] / r[key]) for r in sweep if r["arch"] == "lookwhere" and r[key])
    tl = sorted((r["loc"], full[key] / r[key]) for r in sweep if r["arch"] == "tokenlearner" and r[key] and r[key] == r[key])
    ax.plot([p[0] for p in lw], [p[1] for p in lw], marker="o", color=COLOURS["LookWhere"], label="LookWhere: kept fraction k")
    if tl:
        ax.plot(
            [p[0] for p in tl],
            [p[1] for p in tl],
            marker="s",
            color=COLOURS["TokenLearner-ViT"],
            label=f"TokenLearner S={TL_TOKENS}: insertion point L / depth",
        )
    ax.axhline(1.0, color="black", linewidth=1, label="full ViT")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("k (fraction of patches) or L / depth")
    ax.set_title(f"{title.split(' (')[0].split(',')[0]}: full ViT ÷ variant at {SWEEP_SIZE} px")
    ax.grid(alpha=0.3, which="both")
axes[1, 0].legend(fontsize=7, frameon=False)
source = f"bench results {Path(BENCH_RESULTS).name}" if BENCH_RESULTS else f"measured here, {PRESET} preset, CPU fp32"
fig.suptitle(f"Cost of the full ViT, LookWhere and TokenLearner-ViT ({source})", fontsize=11)
fig.tight_layout()
if FIGURE_DIR:
    Path(FIGURE_DIR).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(FIGURE_DIR) / "nb_efficiency_tradeoffs.png", dpi=120, bbox_inches="tight")
    print("saved", Path(FIGURE_DIR) / "nb_efficiency_tradeoffs.png")
plt.show()

# %% [markdown]
# ## Video: ViViT with and without TokenLearner
#
# From the bench's `video` rows when given (ViViT-B/L at 32 frames), else one tiny ViViT measured here.

# %%
if not video_rows:
    from benchmarks.config import VideoSuite
    from benchmarks.video import run_video

    video_rows = run_video(
        VideoSuite(presets=["tiny"], num_frames=8, num_tokens=4, batch_sizes=[1], train_batch=TRAIN_BATCH),
        env,
        log=lambda m: None,
    )
lines = [
    "| model | tokens in / after TokenLearner | GFLOPs per clip | latency b=1 | train step | activations (train) |",
    "|---|---|---|---|---|---|",
]
for r in video_rows:
    lines.append(
        f"| {r['name']} | {r['tokens_in']} / {r['tokens_out']} | {r['flops'] / 1e9:.2f} | {fmt_time(r.get('infer_b1_s', float('nan')))} | "
        f"{fmt_time(r.get('train_s', float('nan')))} | {fmt_bytes(r.get('act_bytes'))} |"
    )
display(Markdown("\n".join(lines)))
