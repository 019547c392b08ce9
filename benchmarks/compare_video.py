"""``python -m benchmarks.compare_video``: full ViViT vs ViViT + TokenLearner vs video LookWhere on
the synthetic motion task, same data and budget, one table and one accuracy-vs-GMACs plot.

The stages (recipes in ``conf/experiment/demo_vlw_*.yaml``, 16 frames × 64² on CPU):

(a) the full ViViT (``demo_vlw_vivit.yaml``): every tubelet, also the teacher of (b) and the
    starting point of (d);
(b) what-where distillation of video LookWhere from it (``demo_vlw_distill.yaml``);
(c) one fine-tuning of the distilled model per k (``demo_vlw_finetune.yaml``, default k = 2.5 / 5
    / 10% of the tubelets, trained and evaluated at that k);
(d) one ViViT + TokenLearner per (tokens, insertion point) (``demo_vlw_tokenlearner.yaml``,
    default 8 / 16 tokens at 1/4 and 1/2 of the depth), initialised from (a), fine-tuned with the
    schedule of (c).

Then every model is evaluated on the test split, the selector's recall of the target's tubelets is
measured, and all models are timed interleaved (latency at batch 1, training step, activation
memory of a training forward). Unless ``--no-vivit-b``, ViViT-B/16x2 and video LookWhere-B are
also set side by side at the issue's 32 × 224², k = 5% (FLOPs and CPU latency, random weights).

A finished run of the same config already in ``--output-dir`` is reused (``--retrain``: train
again), so a comparison cut short resumes where it stopped: run the same command again.

Writes into ``--output-dir``: ``compare_video.md``, ``compare_video_results.json``,
``compare_video_accuracy_vs_gmacs.png`` and ``compare_video_selection.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lw_lightning.config import ConfigError, load_config

RECIPES = {
    "vivit": "demo_vlw_vivit",
    "distill": "demo_vlw_distill",
    "finetune": "demo_vlw_finetune",
    "tokenlearner": "demo_vlw_tokenlearner",
}
#: what --quick shrinks every stage to (seconds-long smoke run, for tests)
QUICK = [
    "data.num_frames=8",
    "data.img_size=32",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "trainer.max_epochs=1",
    "module.model.num_frames=8",
    "module.model.img_size=32",
]
QUICK_LW = ["module.model.selector_num_frames=4", "module.model.selector_img_size=16"]


def pct(k: float) -> str:
    """``0.025`` -> ``2.5%``."""
    return f"{k * 100:g}%"


def parse_tl(spec: str) -> tuple[int, float]:
    """``"8:0.25"`` -> (8 tokens, insertion at 1/4 of the depth)."""
    try:
        tokens, loc = spec.split(":")
        s, f = int(tokens), float(loc)
    except ValueError:
        raise ConfigError(f"--tokenlearner {spec!r}: expected TOKENS:FRACTION, e.g. 8:0.25") from None
    if s < 1 or not 0.0 <= f < 1.0:
        raise ConfigError(f"--tokenlearner {spec!r}: tokens >= 1 and a fraction of the depth in [0, 1)")
    return s, f


def train(title: str, stage: str, name: str, overrides: list[str], out: Path, reuse: bool) -> tuple[Path, Path, float]:
    """Fit one stage (or reuse a finished run of the same config): (best checkpoint, run config, seconds)."""
    from benchmarks.compare import finished_run
    from lw_lightning.demo import best_checkpoint, run_stage

    recipe = RECIPES[stage]
    overrides = [f"output_dir={out}", f"name={name}", *overrides]
    if reuse and (done := finished_run(load_config(recipe, overrides))) is not None:
        print(f"\n=== {title}: reusing the finished run {done[1].parent}", flush=True)
        return done[0], done[1], 0.0
    result, seconds = run_stage(title, recipe, overrides)
    return Path(best_checkpoint(result)), Path(result.log_dir) / "config.yaml", seconds


def evaluate(config: Path, ckpt: Path) -> Any:
    """The run's own ``test`` on its checkpoint (no logger, callbacks or files): a RunResult."""
    from lw_lightning.tasks import run

    overrides = [
        f"ckpt_path={ckpt}",
        "logger=null",
        "callbacks=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
    ]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lw_compare_video_") as scratch:
        cfg = load_config(config, [*overrides, f"output_dir={scratch}", f"trainer.default_root_dir={scratch}"], evaluation=True)
        return run(cfg, "test")


@torch.no_grad()
def clip_flops(module: Any) -> int:
    """FLOPs of the module's evaluation forward on one clip of its configured shape."""
    from lw_lightning.flops import count_flops

    c = module.model_cfg
    module.eval()
    return count_flops(module, torch.zeros(1, 3, c.num_frames, c.img_size, c.img_size))


@torch.no_grad()
def object_recall(module: Any, dataset: Any, batch: int = 32) -> tuple[float, float]:
    """Video LookWhere on the test clips: mean share of the target's tubelets kept, and the share of
    (clip, temporal slice) pairs in which at least one target tubelet is kept."""
    from lw_lightning.data.synthetic_motion import track_tubelets

    cfg = module.model_cfg
    module.eval()
    recalls, slice_hits = [], []
    for start in range(0, len(dataset), batch):
        samples = [dataset[i] for i in range(start, min(len(dataset), start + batch))]
        video = torch.stack([s["video"] for s in samples])
        target = track_tubelets(torch.stack([s["track"] for s in samples]), cfg.tubelet, cfg.grid)
        keep = module.net.lookwhere(video, k=module.hparams.eval_k)["selected"]
        chosen = torch.zeros_like(target).scatter(1, keep, True)
        both = chosen & target
        recalls += (both.sum(1) / target.sum(1).clamp(min=1)).tolist()
        per_slice_target = target.view(len(samples), cfg.grid[0], -1).any(-1)
        per_slice_hit = both.view(len(samples), cfg.grid[0], -1).any(-1)
        slice_hits += (per_slice_hit.sum(1) / per_slice_target.sum(1).clamp(min=1)).tolist()
    return sum(recalls) / len(recalls), sum(slice_hits) / len(slice_hits)


def token_plan(cfg: Any, k: int | None) -> str:
    """Tubelet tokens each block sees, e.g. ``512 ×2, 64 ×2`` (prefix tokens not counted)."""
    from lw_lightning.models.video_lookwhere import VideoLookWhereConfig

    if isinstance(cfg, VideoLookWhereConfig):
        return f"{k} ×{cfg.depth} + selector {cfg.selector_grid[0] * cfg.selector_grid[1] * cfg.selector_grid[2]} ×{cfg.selector_depth}"
    nt, nh, nw = cfg.grid
    n = nt * nh * nw
    if not cfg.num_tokens:
        return f"{n} ×{cfg.depth}"
    loc = cfg.depth // 2 if cfg.tokenlearner_loc is None else cfg.tokenlearner_loc
    return ", ".join(p for p in (f"{n} ×{loc}" if loc else "", f"{nt * cfg.num_tokens} ×{cfg.depth - loc}") if p)


def time_all(rows: list[dict[str, Any]], modules: dict[str, Any], env: Any, train_batch: int, log: Any) -> None:
    """Latency (batch 1), training step (forward + cross-entropy + backward + AdamW; LookWhere's
    selector frozen) and training activation memory of every row, timed interleaved."""
    from benchmarks.common import Case, saved_activation_bytes, time_interleaved, timing_fields

    c = modules[rows[0]["ckpt"]].model_cfg
    torch.manual_seed(0)
    x1 = torch.randn(1, 3, c.num_frames, c.img_size, c.img_size)
    xt = torch.randn(train_batch, 3, c.num_frames, c.img_size, c.img_size)
    yt = torch.randint(int(rows[0]["num_classes"]), (train_batch,))
    cases = []
    for r in rows:
        module = modules[r["ckpt"]]
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-7)

        def infer(m=module) -> None:
            m.eval()
            with torch.inference_mode():
                m(x1)

        def step(m=module, opt=opt) -> None:
            m.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(xt).float(), yt).backward()
            opt.step()

        cases += [Case(f"{r['name']} | infer b=1", infer, 1), Case(f"{r['name']} | train b={train_batch}", step, train_batch)]
    log(f"timing {len(cases)} cases interleaved ({env.warmup} warm-up + {env.repeats} rounds)")
    time_interleaved(cases, env, log)
    by_name = {case.name: case for case in cases}
    for r in rows:
        module = modules[r["ckpt"]]
        r.update(timing_fields(by_name[f"{r['name']} | infer b=1"], "latency"))
        r.update(timing_fields(by_name[f"{r['name']} | train b={train_batch}"], "train"))
        module.train()
        with saved_activation_bytes(module) as saved:
            loss = F.cross_entropy(module(xt).float(), yt)
        loss.backward()
        module.zero_grad(set_to_none=True)
        r["act_bytes"] = saved["bytes"]
        module.eval()


def vivit_b_side_by_side(env: Any, k: float, log: Any) -> list[dict[str, Any]]:
    """ViViT-B/16x2 vs video LookWhere-B at 32 × 224² (random weights): FLOPs and latency, interleaved."""
    from benchmarks.common import Case, time_interleaved, timing_fields
    from lw_lightning.flops import count_flops
    from lw_lightning.models.video_lookwhere import VideoLookWhere, video_lookwhere_config
    from lw_lightning.models.vivit import ViViT, vivit_config

    with torch.device("meta"):
        xm = torch.zeros(1, 3, 32, 224, 224)
        flops = {
            "full": count_flops(ViViT(vivit_config("base"), 400).eval(), xm),
            "lw": count_flops(VideoLookWhere(video_lookwhere_config("base")).eval(), xm, k=k),
        }
    torch.manual_seed(0)
    vivit, lw = ViViT(vivit_config("base"), 400).eval(), VideoLookWhere(video_lookwhere_config("base")).eval()
    x = torch.randn(1, 3, 32, 224, 224)

    def full() -> None:
        with torch.inference_mode():
            vivit(x)

    def sparse() -> None:
        with torch.inference_mode():
            lw(x, k=k)

    cases = [Case("ViViT-B/16x2, 3136 tubelets", full), Case(f"video LookWhere-B, k={pct(k)}", sparse)]
    log(f"ViViT-B vs video LookWhere-B at 32x224^2: timing interleaved ({env.warmup} warm-up + {env.repeats} rounds)")
    time_interleaved(cases, env, log)
    rows = []
    for case, key in zip(cases, ("full", "lw")):
        rows.append({"name": case.name, "flops": flops[key], **timing_fields(case, "latency")})
    return rows


def results_md(rows: list[dict[str, Any]], train_batch: int) -> str:
    """The comparison table (ratios against the first row, the full ViViT), its Pareto front and
    the selector's recall of the target."""
    from benchmarks.report import _table, compare_md

    md = compare_md(rows, 1, train_batch, tokens="tubelet", item="clips", flops="GMACs / clip")
    recall = [r for r in rows if "object_recall" in r]
    if not recall:
        return md
    table = _table(
        ["video LookWhere", "target tubelets kept (mean over test clips)", "temporal slices with the target seen"],
        [[r["variant"], f"{r['object_recall'] * 100:.0f}%", f"{r['slice_hit'] * 100:.0f}%"] for r in recall],
    )
    return f"{md}\n\n{table}"


def vivit_b_md(rows: list[dict[str, Any]]) -> str:
    from benchmarks.common import fmt_time
    from benchmarks.report import _g, _table, _x

    full = rows[0]
    table = [
        [
            r["name"],
            _g(r["flops"]),
            _x(full["flops"] / r["flops"]),
            fmt_time(r["latency_s"]),
            _x(full["latency_s"] / r["latency_s"]),
        ]
        for r in rows
    ]
    return _table(["model (32 × 224², random weights)", "GMACs / clip", "FLOP ratio", "CPU latency b=1", "latency ratio"], table)


def plot(rows: list[dict[str, Any]], path: Path, chance: float, title: str) -> Path:
    import matplotlib.pyplot as plt

    from lw_lightning.plots import accuracy_figure

    fig = accuracy_figure(rows, title, chance)
    fig.axes[0].set_xlabel("GMACs per clip (log)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_video", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="runs/compare_video", help="where the runs, tables and plots go")
    parser.add_argument(
        "--ks",
        type=float,
        nargs="+",
        default=[0.025, 0.05, 0.1],
        metavar="F",
        help="video LookWhere's k as fractions of the tubelets (default 0.025 0.05 0.1)",
    )
    parser.add_argument(
        "--tokenlearner",
        nargs="+",
        default=["8:0.25", "8:0.5", "16:0.25", "16:0.5"],
        metavar="S:F",
        help="ViViT + TokenLearner variants: S tokens per slice at fraction F of the depth (default 8:0.25 8:0.5 16:0.25 16:0.5)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke version (tests): tiny clips, one epoch, one timing round"
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train every stage again (default: reuse finished runs of the same config)"
    )
    parser.add_argument(
        "--no-vivit-b", action="store_true", help="skip ViViT-B vs video LookWhere-B at 32x224^2 (minutes of CPU)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per case before the timed rounds")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every training run")
    parser.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="train nothing: set the test top-1 of finished comparisons (their --output-dir, e.g. one per seed) side by side",
    )
    return parser


def seeds_table(dirs: list[Path]) -> str:
    """Test top-1 of every variant in each finished comparison of ``dirs`` (one column per run,
    then mean and range), with each variant's GMACs; rows in the order of the first run."""
    from benchmarks.report import _g, _table

    runs = []
    for d in dirs:
        path = d / "compare_video_results.json"
        if not path.is_file():
            raise ConfigError(
                f"--table {d}: no compare_video_results.json (run python -m benchmarks.compare_video --output-dir {d} first)"
            )
        runs.append({r["name"]: r for r in json.loads(path.read_text())["rows"]})
    names = [n for n in runs[0] if all(n in r for r in runs)]
    rows = []
    for name in names:
        accs = [r[name]["acc1"] * 100 for r in runs]
        first = runs[0][name]
        rows.append(
            [
                first["method"],
                first["variant"],
                _g(first["flops"]),
                " / ".join(f"{a:.1f}" for a in accs),
                f"{sum(accs) / len(accs):.1f} ({min(accs):.1f}–{max(accs):.1f})",
            ]
        )
    header = ["method", "variant", "GMACs / clip", "test top-1 % (" + " / ".join(d.name for d in dirs) + ")", "mean (min–max)"]
    return _table(header, rows)


def main(argv: list[str] | None = None) -> int:
    from lw_lightning.cli import one_line

    args = build_parser().parse_args(argv)
    try:
        if args.table:
            print(seeds_table(args.table))
            return 0
        compare_video(args, argv if argv is not None else sys.argv[1:])
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def compare_video(args: argparse.Namespace, argv: list[str]) -> Path:
    """The whole comparison; returns the path of ``compare_video.md``."""
    from benchmarks.common import load_average, machine_info, make_env
    from benchmarks.compare import loc_name

    for k in args.ks:
        if not 0.0 < k <= 1.0:
            raise ConfigError(f"--ks {k}: k is a fraction of the tubelets in (0, 1]")
    tl_specs = [parse_tl(s) for s in args.tokenlearner]
    torch.set_float32_matmul_precision("high")
    out = Path(args.output_dir)
    started = time.perf_counter()
    common = (["trainer.enable_progress_bar=false"] if args.no_progress else []) + (QUICK if args.quick else []) + list(args.set)
    lw_common = [*common, *(QUICK_LW if args.quick else [])]
    reuse = not args.retrain
    seconds: dict[str, float] = {}

    vivit_ckpt, vivit_cfg, seconds["(a) full ViViT"] = train(
        "(a) full ViViT (the teacher)", "vivit", "compare_vivit", common, out, reuse
    )
    _distill_ckpt, distill_cfg, seconds["(b) distillation"] = train(
        "(b) what-where distillation into video LookWhere",
        "distill",
        "compare_vlw_distill",
        [*lw_common, f"module.teacher.checkpoint={vivit_ckpt}"],
        out,
        reuse,
    )
    export = distill_cfg.parent / "video_lookwhere.pt"
    if not export.is_file():
        raise ConfigError(
            f"the distillation run {distill_cfg.parent} has no video_lookwhere.pt (delete the run or pass --retrain)"
        )
    runs: list[tuple[str, str, Path, Path, dict[str, Any]]] = [("full ViViT", "all tubelets", vivit_ckpt, vivit_cfg, {})]
    for k in args.ks:
        title = f"(c) fine-tune video LookWhere at k={pct(k)}"
        ckpt, cfg, seconds[title] = train(
            title,
            "finetune",
            f"compare_vlw_k{k * 1000:g}",
            [*lw_common, f"module.model.pretrained={export}", f"module.train_k={k}", f"module.eval_k={k}"],
            out,
            reuse,
        )
        runs.append(("video LookWhere", f"k={pct(k)}", ckpt, cfg, {"k_fraction": k}))
    from omegaconf import OmegaConf

    from lw_lightning.models.vivit import vivit_config

    depth = vivit_config(**OmegaConf.to_container(load_config(vivit_cfg).module.model)).depth  # type: ignore[arg-type]
    for tokens, loc in tl_specs:
        title = f"(d) ViViT + TokenLearner, {tokens} tokens at {loc_name(loc)}"
        block = int(round(loc * depth, 6))  # as the image TokenLearner-ViT reads a fraction of the depth
        ckpt, cfg, seconds[title] = train(
            title,
            "tokenlearner",
            f"compare_tl{tokens}_at{round(loc * 100)}",
            [
                *common,
                f"module.model.pretrained={vivit_ckpt}",
                f"module.model.num_tokens={tokens}",
                f"module.model.tokenlearner_loc={block}",
            ],
            out,
            reuse,
        )
        runs.append(
            ("ViViT + TokenLearner", f"{tokens} tokens at {loc_name(loc)}", ckpt, cfg, {"note": f"{tokens} at {loc_name(loc)}"})
        )

    print("\n=== test split: every model, then interleaved timing", flush=True)
    rows, modules = [], {}
    for method, variant, ckpt, cfg, extra in runs:
        result = evaluate(cfg, ckpt)
        module = result.module.cpu().eval()
        modules[str(ckpt)] = module
        mc = module.model_cfg
        lw = method == "video LookWhere"
        kk = module.net.lookwhere.resolve_k(module.hparams.eval_k) if lw else None
        row = {
            "method": method,
            "variant": variant,
            "label": method,
            "model": method,
            "name": f"{method} {variant}",
            "ckpt": str(ckpt),
            "acc1": float(result.metrics["test/acc1"]),
            "samples": len(result.datamodule.datasets["test"]),
            "num_classes": int(result.datamodule.num_classes),
            "flops": clip_flops(module),
            "k": kk,
            "tokens": kk if lw else mc.grid[0] * mc.grid[1] * mc.grid[2],
            "token_plan": token_plan(mc, kk),
            **extra,
        }
        if lw:
            row["note"] = f"k={pct(extra['k_fraction'])}"
            row["object_recall"], row["slice_hit"] = object_recall(module, result.datamodule.datasets["test"])
        rows.append(row)
        print(f"  {row['name']}: test top-1 {row['acc1'] * 100:.1f}% at {row['flops'] / 2e9:.4f} GMACs", flush=True)
    warmup, repeats = (0, 1) if args.quick else (args.warmup, args.repeats)
    env = make_env("cpu", "fp32", None, warmup, repeats)
    train_batch = int(load_config(runs[0][3]).data.batch_size)
    time_all(rows, modules, env, train_batch, print)
    big = [] if args.no_vivit_b or args.quick else vivit_b_side_by_side(make_env("cpu", "fp32", None, 1, 3), 0.05, print)

    out.mkdir(parents=True, exist_ok=True)
    from lw_lightning.viz_video import video_selection_picture

    best_lw = max((r for r in rows if r["method"] == "video LookWhere"), key=lambda r: r["k"])
    module = modules[best_lw["ckpt"]]
    test = evaluate_dataset(runs[0][3])
    samples = [test[i] for i in range(min(6, len(test)))]
    video = torch.stack([s["video"] for s in samples])
    with torch.no_grad():
        sel = module.net.lookwhere(video, k=module.hparams.eval_k)
    picture = out / "compare_video_selection.png"
    video_selection_picture(
        video,
        sel["selector_map"],
        sel["selected"],
        module.model_cfg.grid,
        module.model_cfg.tubelet,
        torch.stack([s["track"] for s in samples]),
    ).save(picture)

    command = "python -m benchmarks.compare_video " + " ".join(shlex.quote(a) for a in argv)
    info = machine_info(env)
    info["load average at end (1/5/15 min)"] = load_average()
    total = round(time.perf_counter() - started)
    mc = modules[rows[0]["ckpt"]].model_cfg
    shape = f"{mc.num_frames} × {mc.img_size}²"
    png = plot(
        rows,
        out / "compare_video_accuracy_vs_gmacs.png",
        1.0 / rows[0]["num_classes"],
        f"synthetic motion ({shape}), test split: same data and schedule",
    )
    table = results_md(rows, train_batch)
    results = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": total,
        "machine": info,
        "fit_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "train_batch": train_batch,
        "warmup": warmup,
        "repeats": repeats,
        "rows": rows,
        "vivit_b": big,
    }
    (out / "compare_video_results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = out / "compare_video.md"
    trained_now = sum(seconds.values())
    md.write_text(
        "\n".join(
            [
                "## Full ViViT vs ViViT + TokenLearner vs video LookWhere on synthetic motion",
                "",
                f"`{command}` — {results['date']}, {total} s in all ({trained_now:.0f} s of training in this invocation; reused runs count 0); "
                f"clips of {shape}, test split ({rows[0]['samples']} clips); timings are medians of {repeats} interleaved rounds after "
                f"{warmup} warm-up calls.",
                "",
                *[f"- {k}: {v}" for k, v in info.items()],
                "",
                table,
                "",
                f"![accuracy vs GMACs]({png.name})",
                "",
                f"![selected tubelets over time]({picture.name})",
                "",
                *(["### ViViT-B/16x2 vs video LookWhere-B at 32 × 224², k = 5%", "", vivit_b_md(big), ""] if big else []),
            ]
        )
    )
    print(f"\n{table}\n", flush=True)
    if big:
        print(vivit_b_md(big), flush=True)
    print(f"\nwritten: {md}, {out / 'compare_video_results.json'}, {png}, {picture}\ncomparison done in {total} s", flush=True)
    return md


def evaluate_dataset(config: Path) -> Any:
    """The test split of a run's DataModule (for the selection picture)."""
    from hydra.utils import instantiate

    dm = instantiate(load_config(config).data, _convert_="all")
    dm.setup("test")
    return dm.datasets["test"]


if __name__ == "__main__":
    sys.exit(main())
