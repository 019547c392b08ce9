"""``python -m benchmarks.compare``: full-res ViT vs LookWhere vs TokenLearner-ViT on the demo task.

Same data, same schedule, one evaluation and one timing run for all three ideas:

- the full-res ViT is the demo's teacher (stage a);
- LookWhere is the demo's distilled and fine-tuned model (stages b + c), at k = 5 / 10 / 20%;
- one TokenLearner-ViT per insertion point (default 0, 1/4, 1/2, 3/4 of the depth), initialised
  from the teacher and fine-tuned with LookWhere's fine-tuning schedule on the same data
  (``conf/experiment/demo_tokenlearner.yaml``; data, seed and schedule are carried over from the
  demo's own fine-tuning run, so a ``--quick`` or ``--seed`` demo is compared like for like).

Every model is evaluated on the test split with the ``accuracy`` bench suite's evaluator, then all
variants are timed interleaved in one run (latency, training step, activation memory of a
training forward). With ``--demo-dir`` the demo's checkpoints are used (the comparison trains only
the TokenLearner models); without it the demo stages run first, into ``--output-dir``. A finished
TokenLearner run of the same config already in ``--output-dir`` is reused (``--retrain``: train
again), so a comparison cut short resumes where it stopped.

Writes into ``--output-dir``: ``compare.md`` (table, Pareto front, command), ``compare_results.json``
and ``compare_accuracy_vs_gmacs.png``; the TokenLearner runs go to ``<output-dir>/compare_tl_at<pct>/``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lw_lightning.config import load_config
from lw_lightning.errors import ConfigError

#: Demo fine-tuning settings a TokenLearner run takes over: what "the same data and schedule" means.
CARRIED = (
    "seed",
    "data",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.precision",
    "trainer.accumulate_grad_batches",
    "module.lr",
    "module.weight_decay",
    "module.warmup",
    "module.min_lr_ratio",
    "module.label_smoothing",
)
#: Data settings that define the test split: they must agree between the demo's runs.
TEST_DATA_KEYS = ("image_size", "num_test", "sign_fraction", "distractor_prob", "seed")
RECIPE = "demo_tokenlearner"
_ABSENT = object()


@dataclass
class DemoRuns:
    """The two trained runs of a finished demo output dir that the comparison starts from."""

    demo_dir: Path
    summary: dict[str, Any]
    teacher_ckpt: Path
    teacher_config: Path
    finetune_ckpt: Path
    finetune_config: Path


def _run_of(demo_dir: Path, name: str, recorded: str | None) -> tuple[Path, Path]:
    """(checkpoint, config.yaml) of the demo's ``name`` run: the one ``demo_summary.json`` records,
    else the best checkpoint of the newest ``version_N`` whose fit finished (its ``summary_fit.json``)."""
    if recorded:
        ckpt = Path(recorded)
    else:
        finished = sorted(demo_dir.glob(f"{name}/version_*/summary_fit.json"), key=lambda p: int(p.parent.name.split("_")[-1]))
        if not finished:
            raise ConfigError(f"--demo-dir {demo_dir}: no finished {name} run ({demo_dir}/{name}/version_N/summary_fit.json)")
        fit = json.loads(finished[-1].read_text())
        # the recorded path is absolute: for a demo dir that was moved, the same file in this run dir
        ckpt = finished[-1].parent / "checkpoints" / Path(fit.get("best_model_path") or "last.ckpt").name
    config = ckpt.parent.parent / "config.yaml"
    for path, what in ((ckpt, "checkpoint"), (config, "run config")):
        if not path.is_file():
            raise ConfigError(f"--demo-dir {demo_dir}: the {name} {what} {path} is missing")
    return ckpt, config


def find_demo_runs(demo_dir: str | Path) -> DemoRuns:
    """Locate and check the teacher and LookWhere fine-tuning runs of a ``make demo`` output dir.

    Raises :class:`ConfigError` (one line) for a missing dir, an unfinished demo, missing
    checkpoints, the wrong architectures or runs on different test data."""
    demo_dir = Path(demo_dir)
    if not demo_dir.is_dir():
        raise ConfigError(
            f"--demo-dir {demo_dir}: no such directory (make one with `python -m lw_lightning.demo --output-dir {demo_dir}`)"
        )
    summary_path = demo_dir / "demo_summary.json"
    if not summary_path.is_file():
        raise ConfigError(
            f"--demo-dir {demo_dir} is not a finished demo: no demo_summary.json "
            f"(run `python -m lw_lightning.demo --output-dir {demo_dir}`, or leave out --demo-dir)"
        )
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"--demo-dir {demo_dir}: demo_summary.json is not JSON ({err})") from None
    recorded = summary.get("checkpoints") or {}  # written by the demo since the comparison exists
    teacher_ckpt, teacher_cfg = _run_of(demo_dir, "demo_teacher", recorded.get("teacher"))
    finetune_ckpt, finetune_cfg = _run_of(demo_dir, "demo_finetune", recorded.get("finetune"))
    t, f = OmegaConf.load(teacher_cfg), OmegaConf.load(finetune_cfg)
    for cfg, path, arch in ((t, teacher_cfg, "vit"), (f, finetune_cfg, "lookwhere")):
        got = OmegaConf.select(cfg, "module.model.arch")
        if got != arch:
            raise ConfigError(f"--demo-dir {demo_dir}: {path} trains module.model.arch={got}, expected {arch}")
    differ = [k for k in TEST_DATA_KEYS if OmegaConf.select(t, f"data.{k}") != OmegaConf.select(f, f"data.{k}")]
    if differ:
        raise ConfigError(
            f"--demo-dir {demo_dir}: teacher and fine-tuning runs differ in data.{differ[0]}: not the same test split"
        )
    return DemoRuns(demo_dir, summary, teacher_ckpt, teacher_cfg, finetune_ckpt, finetune_cfg)


def _dotted(value: Any) -> str:
    """A config value as the right-hand side of a ``key=value`` override (YAML flow syntax)."""
    return json.dumps(OmegaConf.to_container(value) if isinstance(value, DictConfig) or OmegaConf.is_list(value) else value)


def carried_overrides(demo_finetune: DictConfig, recipe: DictConfig) -> list[str]:
    """``key=value`` overrides that give the TokenLearner recipe the demo fine-tuning run's data,
    seed and schedule (:data:`CARRIED`); only the keys whose values differ, so a default demo
    adds none."""
    keys: list[str] = []
    for key in CARRIED:
        node = OmegaConf.select(demo_finetune, key, default=None)
        keys += [f"{key}.{k}" for k in node if k != "_target_"] if isinstance(node, DictConfig) else [key]
    out = []
    for key in keys:
        ours = OmegaConf.select(demo_finetune, key, default=_ABSENT)
        if ours is _ABSENT:
            continue
        if OmegaConf.select(recipe, key, default=_ABSENT) != ours:
            out.append(f"{key}={_dotted(ours)}")
    return out


def loc_name(loc: float) -> str:
    """``0.25`` -> ``1/4``; ``0`` -> ``0``."""
    frac = Fraction(loc).limit_denominator(16)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


#: Config parts a finished TokenLearner run must share with a new one to be reused for it.
SAME_RUN_KEYS = ("seed", "data", "module", "trainer.max_epochs", "trainer.max_steps", "trainer.precision")


def finished_run(cfg: DictConfig) -> tuple[Path, Path] | None:
    """(best checkpoint, config.yaml) of a finished fit in ``cfg``'s run folder
    (``output_dir/name/version_N``) trained with the same :data:`SAME_RUN_KEYS`, newest first;
    None when there is none. A comparison cut short then resumes where it stopped."""
    base = Path(str(cfg.output_dir)) / str(cfg.name)
    for summary in sorted(base.glob("version_*/summary_fit.json"), key=lambda p: -int(p.parent.name.split("_")[-1])):
        stored = OmegaConf.load(summary.parent / "config.yaml") if (summary.parent / "config.yaml").is_file() else None
        if stored is None or any(
            OmegaConf.select(stored, k, default=None) != OmegaConf.select(cfg, k, default=None) for k in SAME_RUN_KEYS
        ):
            continue
        fit = json.loads(summary.read_text())
        ckpt = Path(fit.get("best_model_path") or summary.parent / "checkpoints" / "last.ckpt")
        if ckpt.is_file():
            return ckpt, summary.parent / "config.yaml"
    return None


def train_tokenlearner(
    runs: DemoRuns, loc: float, tokens: int, output_dir: Path, extra: list[str], reuse: bool = True
) -> tuple[Path, Path, float]:
    """Fine-tune one TokenLearner-ViT from the teacher (or, with ``reuse``, take a finished run of
    the same config); returns (best checkpoint, run config, seconds of training done now)."""
    from lw_lightning.demo import best_checkpoint, run_stage

    base = [
        f"output_dir={output_dir}",
        f"name=compare_tl_at{round(loc * 100)}",
        f"module.model.pretrained={runs.teacher_ckpt}",
        f"module.model.tokenlearner_loc={float(loc)}",
        f"module.model.tokenlearner_tokens={tokens}",
    ]
    carried = carried_overrides(OmegaConf.load(runs.finetune_config), load_config(RECIPE, base))
    overrides = [*base, *carried, *extra]
    if reuse and (done := finished_run(load_config(RECIPE, overrides))) is not None:
        print(f"\n=== TokenLearner-ViT at {loc_name(loc)}: reusing the finished run {done[1].parent}", flush=True)
        return done[0], done[1], 0.0
    result, seconds = run_stage(f"TokenLearner-ViT, {tokens} tokens at {loc_name(loc)} of the depth", RECIPE, overrides)
    return Path(best_checkpoint(result)), Path(result.log_dir) / "config.yaml", seconds


def token_plan(cfg: Any, k: int | None) -> str:
    """Patch tokens each block sees, e.g. ``256 ×1, 8 ×3`` (prefix tokens not counted)."""
    n = cfg.grid[0] * cfg.grid[1]
    if cfg.arch == "vit":
        return f"{n} ×{cfg.depth}"
    if cfg.arch == "lookwhere":
        lo = cfg.selector_size_for(tuple(cfg.img_size))
        ns = (lo[0] // cfg.patch_size) * (lo[1] // cfg.patch_size)
        return f"{k} ×{cfg.depth} + selector {ns} ×{cfg.selector_depth}"
    block, s = cfg.tokenlearner_block(), cfg.tokenlearner_tokens
    return ", ".join(p for p in (f"{n} ×{block}" if block else "", f"{s} ×{cfg.depth - block}") if p)


def evaluate_all(runs: DemoRuns, tl_runs: list[tuple[float, Path, Path]], env: Any, log: Any) -> list[dict[str, Any]]:
    """Test-split top-1 and GMACs of every variant, full-res ViT first."""
    from .accuracy import evaluate_run
    from .config import AccuracyRun, AccuracySuite

    ks = list(OmegaConf.select(OmegaConf.load(runs.finetune_config), "module.eval_ks") or [0.05, 0.1, 0.2])
    suite = AccuracySuite(ks=ks, split="test")
    no_init = ["module.model.pretrained=null"]  # the checkpoint holds every weight
    rows = []
    for r in evaluate_run(AccuracyRun(str(runs.teacher_config), str(runs.teacher_ckpt), overrides=no_init), suite, env, log):
        rows.append({**r, "method": "full-res ViT", "variant": f"all {r['tokens']} patches", "ckpt": str(runs.teacher_ckpt)})
    for r in evaluate_run(
        AccuracyRun(str(runs.finetune_config), str(runs.finetune_ckpt), ks=ks, overrides=no_init), suite, env, log
    ):
        rows.append(
            {
                **r,
                "method": "LookWhere",
                "variant": f"k={r['tokens']} ({r['tokens'] / rows[0]['tokens']:.0%})",
                "ckpt": str(runs.finetune_ckpt),
            }
        )
    for loc, ckpt, config in tl_runs:
        (r,) = evaluate_run(AccuracyRun(str(config), str(ckpt), overrides=no_init), suite, env, log)
        tokens = OmegaConf.select(OmegaConf.load(config), "module.model.tokenlearner_tokens")
        rows.append(
            {
                **r,
                "method": "TokenLearner-ViT",
                "variant": f"{tokens} tokens at {loc_name(loc)}",
                "note": f"at {loc_name(loc)}",
                "loc": loc,
                "ckpt": str(ckpt),
            }
        )
    for r in rows:
        r["label"] = r["method"]  # one plot line per method
    return rows


def load_classifier(ckpt: str) -> Any:
    """The trained ``ImageClassifier`` of a checkpoint on CPU, without re-reading its init weights."""
    from lw_lightning.models.checkpoint import read_weights
    from lw_lightning.modules.classification import ImageClassifier

    hp = read_weights(ckpt, "checkpoint")["hyper_parameters"]  # weights_only: dataclass configs come back as dicts
    model = dict(hp["model"])
    return ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", model={**model, "pretrained": None})


def time_all(rows: list[dict[str, Any]], env: Any, latency_batch: int, train_batch: int, log: Any) -> None:
    """Latency, training step and training activation memory of every row, timed interleaved in
    one run (A, B, C, A, B, C, …) so a load change on the machine hits every variant alike.

    The trained models are timed (random inputs: cost does not depend on the pixels); a training
    step is forward + cross-entropy on the model's head + backward + AdamW, selector frozen."""
    from .common import Case, time_interleaved, timing_fields
    from .images import forward_fn, train_activation_bytes, train_step_fn

    modules: dict[str, Any] = {}
    for r in rows:
        if r["ckpt"] not in modules:
            modules[r["ckpt"]] = load_classifier(r["ckpt"]).to(env.device)
    h, w = (int(v) for v in rows[0]["size"].split("x"))
    torch.manual_seed(0)
    x1 = torch.randn(latency_batch, 3, h, w, device=env.device)
    xt = torch.randn(train_batch, 3, h, w, device=env.device)
    yt = torch.randint(int(rows[0]["num_classes"] or 2), (train_batch,), device=env.device)
    cases = []
    for r in rows:
        module = modules[r["ckpt"]]
        r["token_plan"] = token_plan(module.model_cfg, r["k"])
        name = f"{r['method']} {r['variant']}"
        fwd = forward_fn(module.net, r["k"])

        def infer(fwd=fwd, net=module.net) -> None:
            net.eval()  # the training cases before it left the net in train mode
            with torch.inference_mode(), env.autocast():
                fwd(x1)

        cases.append(Case(f"{name} | infer b={latency_batch}", infer, items=latency_batch))
        cases.append(
            Case(
                f"{name} | train b={train_batch}", train_step_fn(module.net, module.head, r["k"], xt, yt, env), items=train_batch
            )
        )
    log(f"timing {len(cases)} cases interleaved ({env.warmup} warm-up + {env.repeats} rounds)")
    time_interleaved(cases, env, log)
    by_name = {c.name: c for c in cases}
    for r in rows:
        name, module = f"{r['method']} {r['variant']}", modules[r["ckpt"]]
        r.update(timing_fields(by_name[f"{name} | infer b={latency_batch}"], "latency"))
        r.update(timing_fields(by_name[f"{name} | train b={train_batch}"], "train"))
        r["act_bytes"] = train_activation_bytes(module.net, module.head, r["k"], xt, yt, env)
        module.net.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo-dir", default=None, help="a finished `python -m lw_lightning.demo` output dir (default: run the demo first)"
    )
    parser.add_argument("--output-dir", default="runs/compare", help="where the TokenLearner runs, tables and plot go")
    parser.add_argument(
        "--locs",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75],
        metavar="F",
        help="TokenLearner insertion points as fractions of the depth (default: 0 0.25 0.5 0.75)",
    )
    parser.add_argument(
        "--tokens", type=int, default=8, help="TokenLearner's learned tokens S (default 8, the paper's ViT-B/16 setting)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke version (tests): the demo's --quick data, one timing round"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train every TokenLearner model again (default: reuse finished runs of the same config in --output-dir)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per case before the timed rounds")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--device", default="auto", help="timing device: auto, cpu or cuda")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="key=value", help="overrides for every training run this command starts"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from lw_lightning.cli import one_line

    args = build_parser().parse_args(argv)
    try:
        compare(args, argv if argv is not None else sys.argv[1:])
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def compare(args: argparse.Namespace, argv: list[str]) -> Path:
    """The whole comparison; returns the path of ``compare.md``."""
    from lw_lightning.plots import accuracy_chance, plot_accuracy

    from . import report
    from .common import load_average, machine_info, make_env

    out = Path(args.output_dir)
    if args.demo_dir is not None:
        runs = find_demo_runs(args.demo_dir)  # fail before anything trains
    for loc in args.locs:
        if not 0.0 <= loc < 1.0:
            raise ConfigError(f"--locs {loc}: an insertion point is a fraction of the depth in [0, 1)")
    torch.set_float32_matmul_precision("high")
    started, load_at_start = time.perf_counter(), load_average()
    if args.demo_dir is None:
        from lw_lightning.demo import run_demo

        demo_args = argparse.Namespace(quick=args.quick, no_progress=args.no_progress, set=args.set, set_a=[], set_b=[], set_c=[])
        run_demo(demo_args, seed=None, output_dir=out)
        runs = find_demo_runs(out)
    extra = (["trainer.enable_progress_bar=false"] if args.no_progress else []) + list(args.set)
    tl_runs, tl_seconds = [], {}
    for loc in args.locs:
        ckpt, config, seconds = train_tokenlearner(runs, loc, args.tokens, out, extra, reuse=not args.retrain)
        tl_runs.append((loc, ckpt, config))
        tl_seconds[loc_name(loc)] = round(seconds, 1)
    warmup, repeats = (0, 1) if args.quick else (args.warmup, args.repeats)
    env = make_env(args.device, "auto", None, warmup, repeats)
    print("\n=== test split: every variant, then interleaved timing", flush=True)
    rows = evaluate_all(runs, tl_runs, env, print)
    train_batch = int(OmegaConf.select(OmegaConf.load(runs.finetune_config), "data.batch_size"))
    latency_batch = 1
    time_all(rows, env, latency_batch, train_batch, print)

    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.compare " + " ".join(shlex.quote(a) for a in argv)
    info = machine_info(env)
    # machine_info reads the load now; the comparison started long before
    info["load average at start (1/5/15 min)"], info["load average at end (1/5/15 min)"] = load_at_start, load_average()
    seconds = round(time.perf_counter() - started)
    plot = plot_accuracy(
        rows,
        out / "compare_accuracy_vs_gmacs.png",
        chance=accuracy_chance(rows),
        title="demo task (synthetic signs), test split: same data and schedule",
    )
    table = report.compare_md(rows, latency_batch, train_batch)
    results = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "machine": info,
        "demo_dir": str(runs.demo_dir),
        "tokens": args.tokens,
        "latency_batch": latency_batch,
        "train_batch": train_batch,
        "warmup": warmup,
        "repeats": repeats,
        "tokenlearner_fit_seconds": tl_seconds,
        "rows": rows,
    }
    (out / "compare_results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = out / "compare.md"
    md.write_text(
        "\n".join(
            [
                "## Full-res ViT vs LookWhere vs TokenLearner-ViT on the demo task",
                "",
                f"`{command}` — {results['date']}, {seconds} s; test split ({rows[0]['samples']} images), timings are medians of "
                f"{repeats} interleaved rounds after {warmup} warm-up calls.",
                "",
                *[f"- {k}: {v}" for k, v in info.items()],
                "",
                table,
                "",
                f"![accuracy vs GMACs]({plot.name})" if plot else "",
                "",
            ]
        )
    )
    print(f"\n{table}\n\nwritten: {md}, {out / 'compare_results.json'}, {plot}\ncomparison done in {seconds} s", flush=True)
    return md


if __name__ == "__main__":
    sys.exit(main())
