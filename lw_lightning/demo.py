"""``make demo``: the LookWhere pipeline in miniature, on synthetic sparse recognition, CPU.

(a) train the tiny full-resolution ViT (it stands in for DINOv2 as the teacher);
(b) distill a tiny LookWhere from it (what-where distillation);
(c) fine-tune LookWhere for classification with the selector frozen;
(d) print accuracy and FLOPs per image of the full-res ViT vs LookWhere at several k, and save
    a PNG of selection maps on held-out images with the sign's box drawn.

Each stage is the same run as the printed ``python -m lw_lightning ...`` command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from .config import load_config
from .flops import image_model_flops
from .models.config import resolve_k
from .modules.classification import ImageClassifier
from .plots import plot_accuracy
from .tasks import run
from .viz import SELECTION_LEGEND, picture_grid, selection_overlay


def run_stage(title: str, recipe: str, overrides: list[str], command: str = "fit"):
    """Print the stage's title and equivalent CLI command, run experiment ``recipe`` (a name in
    conf/experiment/); returns (result, seconds)."""
    shown = " ".join(shlex.quote(o) for o in overrides if not o.startswith("trainer.enable_progress_bar"))
    print(f"\n=== {title}\n$ python -m lw_lightning {command} experiment={recipe} {shown}", flush=True)
    t0 = time.perf_counter()
    result = run(load_config(recipe, overrides, evaluation=command != "fit"), command)
    return result, time.perf_counter() - t0


def best_checkpoint(result) -> str:
    """The fit's best checkpoint (by the recipe's monitored metric), else its last."""
    cb = result.trainer.checkpoint_callback
    return cb.best_model_path or cb.last_model_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lw_lightning.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="runs", help="root of the run directories")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke version (tests)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--seed", type=int, default=None, help="training seed of every stage (default: the recipes' seed, 0)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run the whole demo once per seed (into OUTPUT_DIR/seed_N) and print mean and range over seeds",
    )
    parser.add_argument(
        "--table",
        nargs="+",
        default=None,
        metavar="DIR",
        help="print (and write to OUTPUT_DIR/demo_seeds.md) the mean/range table of finished demo runs, from their demo_summary.json; trains nothing",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every stage")
    for stage, what in (("a", "teacher"), ("b", "distillation"), ("c", "fine-tuning")):
        parser.add_argument(
            f"--set-{stage}", nargs="*", default=[], metavar="key=value", help=f"overrides for stage {stage} ({what})"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_float32_matmul_precision("high")
    if args.seeds or args.table:
        summaries = []
        for seed in args.seeds or []:
            out = Path(args.output_dir) / f"seed_{seed}"
            print(f"\n##### seed {seed} -> {out}", flush=True)
            summaries.append(run_demo(args, seed=seed, output_dir=out))
        for folder in args.table or []:
            path = Path(folder) / "demo_summary.json"
            if not path.is_file():
                print(f"error: {path} not found: --table takes output dirs of finished demo runs", file=sys.stderr)
                return 2
            summaries.append(json.loads(path.read_text()))
        table = seeds_table(summaries)
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        path = Path(args.output_dir) / "demo_seeds.md"
        path.write_text(table + "\n")
        print(f"\n{table}\n\nwritten: {path}")
        return 0
    run_demo(args, seed=args.seed, output_dir=Path(args.output_dir))
    return 0


def run_demo(args: argparse.Namespace, seed: int | None, output_dir: Path) -> dict:
    """Stages a-d into ``output_dir``; returns the summary also written to ``demo_summary.json``."""
    common = [f"output_dir={output_dir}"]
    if seed is not None:
        common.append(f"seed={seed}")
    if args.no_progress:
        common.append("trainer.enable_progress_bar=false")
    if args.quick:
        common += ["data.num_train=32", "data.num_val=16", "data.num_test=16", "data.batch_size=16", "trainer.max_epochs=1"]
    common += args.set
    t_start = time.perf_counter()

    teacher, t_a = run_stage("(a) full-resolution ViT (the teacher)", "demo_teacher", [*common, *args.set_a])
    teacher_ckpt = best_checkpoint(teacher)
    distill, t_b = run_stage(
        "(b) what-where distillation into LookWhere",
        "demo_distill",
        [*common, f"module.teacher.checkpoint={teacher_ckpt}", *args.set_b],
    )
    exported = Path(distill.log_dir) / "lookwhere.pt"
    finetune, t_c = run_stage(
        "(c) fine-tune LookWhere (frozen selector)",
        "demo_finetune",
        [*common, f"module.model.pretrained={exported}", *args.set_c],
    )

    # (d) held-out test split: both models, same data, same run
    print("\n=== (d) test split: accuracy and FLOPs per image", flush=True)
    vit_test, _ = run_stage("full-res ViT on test", "demo_teacher", [*common, *args.set_a, f"ckpt_path={teacher_ckpt}"], "test")
    lw_test, _ = run_stage(
        "LookWhere on test",
        "demo_finetune",
        [*common, *args.set_c, f"module.model.pretrained={exported}", f"ckpt_path={best_checkpoint(finetune)}"],
        "test",
    )
    vit_model = ImageClassifier.load_from_checkpoint(teacher_ckpt, map_location="cpu").eval()
    lw_module = lw_test.module.cpu().eval()
    size = tuple(lw_module.model_cfg.img_size)
    n = (size[0] // lw_module.model_cfg.patch_size) * (size[1] // lw_module.model_cfg.patch_size)
    full_flops = image_model_flops(vit_model.net, size)
    rows = [("full-res ViT", n, vit_test.metrics["test/acc1"], full_flops)]
    for k in lw_module.eval_ks:
        rows.append(
            (
                f"LookWhere k={resolve_k(k, n)}",
                resolve_k(k, n),
                lw_test.metrics[f"test/acc1_k/{k}"],
                image_model_flops(lw_module.net, size, k=k),
            )
        )

    # the accuracies depend on the seed and on the float summation order (thread count, CPU kernels): say which
    print(f"\ntest split, seed {seed if seed is not None else 0}, {torch.get_num_threads()} torch threads:")
    print(f"{'model':<20} {'patches':>8} {'% of N':>7} {'test acc':>9} {'MFLOPs/img':>11} {'vs full':>8}")
    for name, kk, acc, flops in rows:
        print(f"{name:<20} {kk:>8} {100 * kk / n:>6.1f}% {100 * acc:>8.1f}% {flops / 1e6:>11.1f} {full_flops / flops:>7.1f}x")

    num_classes = int(lw_test.datamodule.num_classes)
    curve = [
        dict(label=name.split(" k=")[0], model=name, k=None if kk == n else kk, tokens=kk, flops=flops, acc1=acc)
        for name, kk, acc, flops in rows
    ]
    plot = plot_accuracy(
        curve,
        output_dir / "demo_accuracy_vs_flops.png",
        title="make demo: test split, synthetic sparse signs",
        chance=1 / num_classes,
    )
    print(f"\naccuracy vs FLOPs: {plot}")
    eval_k = resolve_k(lw_module.hparams.eval_k, n)
    recall, hit = sign_patch_recall(lw_module, lw_test.datamodule.datasets["test"], lw_module.hparams.eval_k)
    print(
        f"selector at k={eval_k}: {100 * recall:.0f}% of the sign's patches selected, "
        f"at least one in {100 * hit:.0f}% of the test images with a sign"
    )
    png = output_dir / "demo_selection_maps.png"
    _save_selection_png(lw_module, lw_test.datamodule, png)
    print(f"\nselection maps (red heat over the grey image = selector map, yellow = selected patches, green = sign box): {png}")
    total = time.perf_counter() - t_start
    print(f"stage times: teacher {t_a:.0f}s, distillation {t_b:.0f}s, fine-tuning {t_c:.0f}s; total {total:.0f}s")
    summary = {
        "seed": seed if seed is not None else 0,
        "threads": torch.get_num_threads(),
        "num_classes": num_classes,
        "patches": n,
        "eval_k": eval_k,
        "rows": [dict(model=name, patches=kk, acc1=float(acc), flops=int(flops)) for name, kk, acc, flops in rows],
        "selector_recall": recall,
        "selector_hit": hit,
        "seconds": {"teacher": round(t_a, 1), "distill": round(t_b, 1), "finetune": round(t_c, 1), "total": round(total, 1)},
        # what `python -m benchmarks.compare --demo-dir` starts from
        "checkpoints": {"teacher": str(teacher_ckpt), "lookwhere": str(exported), "finetune": str(best_checkpoint(finetune))},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def seeds_table(summaries: list[dict]) -> str:
    """Markdown: test accuracy per model as mean and range over the runs' seeds, plus FLOPs."""
    seeds = ", ".join(str(s["seed"]) for s in summaries)
    threads = sorted({s.get("threads") for s in summaries}, key=str)
    setting = "" if threads == [None] else f" ({', '.join(str(t) for t in threads)} thread{'s' if threads != [1] else ''})"
    first = summaries[0]
    full_flops = first["rows"][0]["flops"]
    lines = [
        f"| model | patches | test acc, mean (min–max) over seeds {seeds}{setting} | MFLOPs/img | fewer FLOPs |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(first["rows"]):
        accs = [100 * s["rows"][i]["acc1"] for s in summaries]
        lines.append(
            f"| {row['model']} | {row['patches']} | {statistics.mean(accs):.1f}% ({min(accs):.1f}–{max(accs):.1f}) "
            f"| {row['flops'] / 1e6:.1f} | {full_flops / row['flops']:.1f}× |"
        )
    rec = [100 * s["selector_recall"] for s in summaries]
    hit = [100 * s["selector_hit"] for s in summaries]
    secs = [s["seconds"]["total"] for s in summaries]
    lines += [
        "",
        f"Selector at k={first['eval_k']}: {statistics.mean(rec):.0f}% ({min(rec):.0f}–{max(rec):.0f}) of a sign's patches selected, "
        f"at least one in {statistics.mean(hit):.0f}% ({min(hit):.0f}–{max(hit):.0f}) of the test images with a sign. "
        f"Demo time per seed: {min(secs):.0f}–{max(secs):.0f} s (stages a–d).",
    ]
    return "\n".join(lines)


@torch.no_grad()
def sign_patch_recall(module: ImageClassifier, ds, k: int | float, batch_size: int = 64) -> tuple[float, float]:
    """Where-quality of the selector on images with a sign: the mean fraction of sign patches
    (centre inside the sign's disc) among the top-k, and the fraction of images with at least one."""
    p = module.model_cfg.patch_size
    idx = [i for i in range(len(ds)) if ds[i]["label"] > 0]
    fractions, hits = [], []
    for start in range(0, len(idx), batch_size):
        samples = [ds[i] for i in idx[start : start + batch_size]]
        images = torch.stack([s["image"] for s in samples])
        gh, gw = images.shape[-2] // p, images.shape[-1] // p
        _, out = module(images, k=k)
        cy, cx = torch.meshgrid((torch.arange(gh) + 0.5) * p, (torch.arange(gw) + 0.5) * p, indexing="ij")
        for s, selected in zip(samples, out["selected"]):
            x0, y0, x1, _y1 = s["box"].tolist()
            r = (x1 - x0) / 2
            sign = (((cx - (x0 + r)) ** 2 + (cy - (y0 + r)) ** 2) <= r * r).flatten()
            chosen = torch.zeros_like(sign)
            chosen[selected] = True
            if sign.any():
                fractions.append(float((chosen & sign).sum() / sign.sum()))
                hits.append(float((chosen & sign).any()))
    return (sum(fractions) / len(fractions), sum(hits) / len(hits)) if fractions else (float("nan"), float("nan"))


@torch.no_grad()
def _save_selection_png(module: ImageClassifier, datamodule, path: Path, count: int = 8) -> None:
    ds = datamodule.datasets["test"]
    tiles = []
    k = module.hparams.eval_k
    # signs first: they are what the picture is for
    indices = [i for i in range(len(ds)) if ds[i]["label"] > 0][: count - 2] + [i for i in range(len(ds)) if ds[i]["label"] == 0][
        :2
    ]
    for i in indices:
        sample = ds[i]
        _, out = module(sample["image"].unsqueeze(0), k=k)
        tiles.append(
            selection_overlay(
                sample["image"], out["selector_map"][0], out["selected"][0], module.model_cfg.patch_size, sample["box"].tolist()
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    picture_grid(tiles, ncols=4, legend=SELECTION_LEGEND).save(path)


if __name__ == "__main__":
    sys.exit(main())
