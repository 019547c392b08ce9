"""The bench command (``python -m benchmarks``): config validation, the activation-memory meter, the
PyAV reader, a smoke run.

Speed is never asserted here; only that things are measured and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchmarks.__main__ import main
from benchmarks.common import saved_activation_bytes
from benchmarks.config import parse_bench_config
from lw_lightning.config import ConfigError
from lw_lightning.data.video_io import torchcodec_problem


def test_bench_config_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'bench.images.groups'"):
        parse_bench_config({"images": {"grops": []}})
    with pytest.raises(ConfigError, match="unknown suite"):
        parse_bench_config({"suites": ["imagez"]})
    with pytest.raises(ConfigError, match=r"did you mean 'bench.accuracy.runs\[0\].ckpt_path'"):
        parse_bench_config({"accuracy": {"runs": [{"config": "a.yaml", "ckpt": "b.ckpt"}]}})
    cfg = parse_bench_config({"images": {"groups": [{"size": 994, "ks": [0.05]}]}})
    assert cfg.images.groups[0].size == 994 and cfg.images.groups[0].batch_sizes == [1, 8]


def test_bench_data_readers_are_checked(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown reader 'av' \(plain, decord, pyav or torchcodec\)"):
        parse_bench_config({"data": {"readers": ["plain", "av"]}})
    import lw_lightning.data.video_io as video_io

    monkeypatch.setattr(video_io, "torchcodec_problem", lambda: "torchcodec finds no FFmpeg libraries")
    with pytest.raises(ConfigError, match="bench.data.readers: torchcodec: torchcodec finds no FFmpeg libraries"):
        parse_bench_config({"suites": ["data"], "data": {"readers": ["plain", "torchcodec"]}})
    monkeypatch.setattr(video_io, "torchcodec_problem", lambda: None)
    assert parse_bench_config({"suites": ["data"], "data": {"readers": ["torchcodec"]}}).data.readers == ["torchcodec"]


def test_cli_bench_config_error_exits_2(root, capsys):
    assert main(["bench=smoke", "bench.repeats=0"]) == 2
    assert "bench.repeats" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["bench=nope"], "error: unknown bench 'nope': choose one of cpu, gpu, smoke (conf/bench/)"),
        (["bench=smoke", "bench.repeat=3"], "error: unknown key 'bench.repeat' (did you mean 'bench.repeats'?)"),
        (
            ["bench=smoke", "bench.images.grops=1"],
            "error: unknown key 'bench.images.grops' (did you mean 'bench.images.groups'?)",
        ),
        (["bench=smoke", "seed=1"], "error: unknown key 'seed'"),  # a run config's key, not a bench config's
        (["output_dir=x"], "error: missing mandatory value(s): bench (set e.g. bench=...)"),
        (
            ["--config", "conf/bench/cpu.yaml", "output_dir=x"],
            "error: --config/--print-config are gone (configs are Hydra groups now); run: python -m benchmarks bench=cpu output_dir=x",
        ),
    ],
)
def test_bench_command_mistakes_are_one_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing written
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == expected
    assert list(tmp_path.iterdir()) == []


def test_bench_command_prints_its_config_help_and_usage(capsys):
    assert main(["bench=smoke", "bench.repeats=3", "--cfg", "job"]) == 0
    printed = capsys.readouterr().out
    assert "output_dir: runs/bench/smoke" in printed and "repeats: 3" in printed
    assert main(["--help"]) == 0
    helped = capsys.readouterr().out
    assert helped.startswith("python -m benchmarks bench=NAME") and "bench: cpu, gpu, smoke" in helped
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: python -m benchmarks bench=NAME")


def test_bench_command_runs_from_the_repository_root_without_torch_before_its_checks(root):
    """`python -m benchmarks` is run from a checkout (the package is not installed): a mistake is one
    line within a couple of seconds, torch not imported."""
    code = (  # what `python -m benchmarks bench=smoke bench.repat=1` does, then a look at what it imported
        "import runpy, sys\n"
        "sys.argv[1:] = ['bench=smoke', 'bench.repat=1']\n"
        "try:\n    runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert proc.stderr.strip() == "error: unknown key 'bench.repat' (did you mean 'bench.repeats'?)"


def test_saved_activation_bytes_counts_activations_not_weights():
    lin = nn.Linear(64, 256)
    x = torch.randn(8, 64)
    with saved_activation_bytes(lin) as saved:
        lin(x).sum().backward()
    assert saved["bytes"] == x.numel() * 4  # the input is saved; the weight is not counted
    with saved_activation_bytes(lin) as saved, torch.autocast("cpu", dtype=torch.bfloat16):
        lin(x).float().sum()
    assert saved["bytes"] == x.numel() * 2  # the bf16 copy of x; the bf16 weight copy is excluded


def test_pyav_reader_matches_decord(tmp_path):
    from benchmarks.data import read_clip_frames_pyav, write_realistic_video
    from lw_lightning.data.video_io import read_clip_frames

    path = tmp_path / "v.mp4"
    write_realistic_video(path, seconds=2, fps=25, width=96, height=64, gop=10, seed=0)
    idx = np.array([13, 15, 17, 17, 40])  # a seek past two keyframes, a repeat
    a = read_clip_frames(path, lambda n: idx)
    b = read_clip_frames_pyav(str(path), lambda n: idx)
    assert a.shape == b.shape == (5, 64, 96, 3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_bench_smoke_writes_tables_and_plot(root, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench=smoke", f"output_dir={out}"]) == 0
    md = (out / "benchmarks.md").read_text()
    for title in (
        "LookWhere vs full-resolution ViT",
        "ViViT with vs without TokenLearner",
        "Kinetics data loading",
        "Lightning vs a plain",
    ):
        assert title in md
    assert (out / "speedup_vs_resolution.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == f"python -m benchmarks bench=smoke output_dir={out}"
    full, lw = results["images"][0], results["images"][1]
    assert full["arch"] == "vit" and lw["arch"] == "lookwhere" and lw["flops"] < full["flops"]
    assert lw["act_bytes"] < full["act_bytes"]
    assert all(r["infer_b1_s"] > 0 for r in results["images"])


def test_accuracy_suite_matches_the_test_command_and_plots(tmp_path, root, monkeypatch):
    """Accuracy vs FLOPs of a ViT and a LookWhere checkpoint equals what `test` reports for them."""
    from lw_lightning.cli import main as lw_main
    from lw_lightning.config import load_config
    from lw_lightning.tasks import run

    from .conftest import tiny_overrides

    monkeypatch.chdir(root)
    vit_rec, lw_rec = root / "conf/experiment/demo_vit.yaml", root / "conf/experiment/demo_finetune.yaml"
    vit_o = [*tiny_overrides(tmp_path), "trainer.max_steps=2", "trainer.limit_val_batches=1"]
    lw_o = [
        *tiny_overrides(tmp_path, "lookwhere"),
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "module.model.pretrained=null",
        "module.train_k=16",
        "module.eval_k=16",
        "module.eval_ks=[8,16]",
    ]
    ckpts = {}
    for name, rec, o in (("v", vit_rec, vit_o), ("l", lw_rec, lw_o)):
        assert lw_main(["fit", f"experiment={rec.stem}", *o, f"name={name}"]) == 0
        ckpts[name] = str(next((tmp_path / "runs" / name).glob("version_*/checkpoints/last.ckpt")))
    reported = {
        name: run(load_config(rec, [*o, f"name={name}_test", f"ckpt_path={ckpts[name]}"]), "test").metrics
        for name, rec, o in (("v", vit_rec, vit_o), ("l", lw_rec, lw_o))
    }

    out = tmp_path / "bench"
    runs = (
        f"[{{config: {vit_rec}, ckpt_path: '{ckpts['v']}', overrides: {json.dumps(vit_o)}, label: full-res}},"
        f" {{config: {lw_rec}, ckpt_path: '{ckpts['l']}', overrides: {json.dumps(lw_o)}, ks: [8, 16]}}]"
    )
    assert (
        main(
            [
                "bench=smoke",
                f"output_dir={out}",
                "bench.suites=[accuracy]",
                "bench.accuracy.split=test",
                f"bench.accuracy.runs={runs}",
            ]
        )
        == 0
    )
    rows = json.loads((out / "results.json").read_text())["accuracy"]
    assert [(r["label"], r["k"]) for r in rows] == [("full-res", None), ("LookWhere-tiny", 8), ("LookWhere-tiny", 16)]
    assert rows[0]["acc1"] == pytest.approx(reported["v"]["test/acc1"])
    assert rows[1]["acc1"] == pytest.approx(reported["l"]["test/acc1_k/8"])
    assert rows[2]["acc1"] == pytest.approx(reported["l"]["test/acc1_k/16"])
    assert rows[0]["flops"] > rows[2]["flops"] > rows[1]["flops"] > 0
    assert all(r["samples"] == 8 for r in rows)
    assert (out / "accuracy_vs_flops.png").stat().st_size > 0
    assert "full-res" in (out / "benchmarks.md").read_text()


def test_accuracy_suite_names_a_missing_checkpoint(tmp_path, root, capsys):
    runs = f"[{{config: {root / 'conf/experiment/demo_vit.yaml'}, ckpt_path: {tmp_path / 'nope.ckpt'}}}]"
    assert main(["bench=smoke", f"output_dir={tmp_path}", "bench.suites=[accuracy]", f"bench.accuracy.runs={runs}"]) == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_video_throughput_tables_have_rates_and_worker_cpu(tmp_path):
    from benchmarks import data_throughput

    argv = ["--video", "--videos", "1", "--seconds", "1", "--size", "96x64", "--gop", "10", "--clips", "4x2", "--workers", "1"]
    argv += ["--rounds", "1", "--clips-per-run", "2", "--batch-size", "1", "--no-old", "--stored-size", "--plain-workers"]
    assert data_throughput.main([*argv, "--dir", str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "**clips/s per worker**" in text and "**worker CPU per clip**" in text
    assert "loader / loader (plain workers)" in text
    rows = [ln.strip("|").split("|") for ln in text.splitlines() if ln.startswith("| raw |")]
    assert len(rows) == 2  # one row per table: plain, plain+crop, loader, stored size, plain-workers loader, then 4 ratios
    rates, cpu = [float(c) for c in rows[0][3:]], [float(c) for c in rows[1][3:]]
    assert len(rates) == len(cpu) == 9 and all(v > 0 for v in rates) and all(v >= 0 for v in cpu[:5])
    assert abs(rates[5] - rates[2] / rates[0]) < 0.02  # loader / plain, as a speed
    assert abs(rates[8] - rates[2] / rates[4]) < 0.02  # loader / loader in plain workers
    if cpu[0] > 0 and cpu[2] > 0:  # CPU time is counted in 10-ms ticks: a tiny run may count none
        assert abs(cpu[5] - cpu[0] / cpu[2]) < 0.02  # the CPU table's ratios are speeds too: plain time / loader time


@pytest.mark.skipif(torchcodec_problem() is not None, reason=f"{torchcodec_problem()}")
def test_video_throughput_with_the_torchcodec_loader(tmp_path):
    from benchmarks import data_throughput

    argv = ["--video", "--videos", "1", "--seconds", "1", "--size", "96x64", "--gop", "10", "--clips", "4x2", "--workers", "1"]
    argv += ["--rounds", "1", "--clips-per-run", "2", "--batch-size", "1", "--no-old", "--torchcodec", "--dir", str(tmp_path)]
    assert data_throughput.main([*argv, "--out", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    header = next(ln for ln in lines if ln.startswith("| files"))
    assert "loader, torchcodec (clips/s)" in header and "loader, torchcodec / plain" in header
    rates = [float(c) for c in next(ln for ln in lines if ln.startswith("| raw |")).strip("|").split("|")[3:]]
    # plain, plain+crop, loader, torchcodec, loader with torchcodec; loader / plain, loader / plain+crop; the 3 torchcodec ratios
    assert len(rates) == 10 and all(v > 0 for v in rates)
    assert abs(rates[8] - rates[4] / rates[0]) < 0.02 and abs(rates[9] - rates[4] / rates[3]) < 0.02


def test_decoder_resize_table_has_each_decoder_and_item(tmp_path, capsys):
    from benchmarks import decoder_resize

    argv = ["--size", "96x64", "--videos", "1", "--seconds", "1", "--gop", "10", "--clip", "4x2", "--clips", "1", "--rounds", "1"]
    threads = torch.get_num_threads()
    assert decoder_resize.main([*argv, "--dir", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # later tests compare runs bit for bit across processes
    rows = [
        ln.strip("|").split("|") for ln in capsys.readouterr().out.splitlines() if ln.startswith(("| decord", "| torchcodec"))
    ]
    decoders = ["decord"] + ([] if torchcodec_problem() else ["torchcodec"])
    assert [(r[0].strip(), r[1].strip()[:5]) for r in rows] == [(d, i) for i in ("train", "eval ") for d in decoders]
    for r in rows:
        on, off, ratio = (float(c) for c in r[2:])
        assert (
            on > 0 and off > 0.5 and (on - 0.5) / (off + 0.5) - 0.01 <= ratio <= (on + 0.5) / (off - 0.5) + 0.01
        )  # ms shown rounded


def _speedup_rows(groups: list[dict]) -> list[dict]:
    """Result rows of the images suite (full-res ViT first per size) with made-up timings."""
    rows = []
    for g in groups:
        n, times = (g["size"] // 14) ** 2, {f"infer_b{b}_s": 1.0 for b in g["batch_sizes"]}
        rows.append(dict(size=g["size"], model="ViT full", k=None, flops=n * 1e6, **times))
        for i, k in enumerate(g["ks"]):
            frac = k if isinstance(k, float) else k / n
            rows.append(
                dict(size=g["size"], model=f"LookWhere {k}", k=k, flops=n * frac * 1e6, **dict.fromkeys(times, 0.5 - 0.1 * i))
            )
    return rows


def _shown(handle) -> tuple:
    """What a legend entry draws: its colour, its marker and its line style where it draws a line."""
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D

    if isinstance(handle, Line2D):
        line = handle.get_linestyle() if handle.get_linestyle() not in ("None", "none", "") else None
        marker = handle.get_marker() if handle.get_marker() not in ("None", "none", "", None) else None
        return to_hex(handle.get_color()), marker, line
    return to_hex(handle.get_facecolor()), "patch", None


SMOKE = [{"size": 112, "ks": [0.25], "batch_sizes": [1, 2]}, {"size": 224, "ks": [0.05, 0.1], "batch_sizes": [1, 2]}]
GPU = [
    {"size": 224, "ks": [128], "batch_sizes": [1, 256]},
    {"size": 518, "ks": [0.05, 0.1], "batch_sizes": [1, 64]},
    {"size": 994, "ks": [0.05, 0.1], "batch_sizes": [1, 32]},
]


@pytest.mark.parametrize(
    "groups, lines, measures",
    [
        # bench=smoke: each k at one resolution only, so one point per k and measure: no lines
        (SMOKE, False, {"FLOPs", "time b=1", "time b=2"}),
        # bench=gpu: k=128 at one resolution, the fractions at two: lines, whose styles tell measures apart
        (GPU, True, {"FLOPs", "time b=1", "time, throughput batch"}),
    ],
)
def test_speedup_plot_legend_entries_each_mean_something(groups, lines, measures):
    import matplotlib.pyplot as plt
    from matplotlib.legend import Legend

    from benchmarks.report import speedup_figure

    cfg = parse_bench_config({"images": {"preset": "tiny", "groups": groups}})
    fig = speedup_figure(_speedup_rows(groups), cfg)
    ax = fig.axes[0]
    # a line style on a single point draws nothing: only series of two or more points have one
    for line in ax.get_lines():
        if line.get_linestyle() not in ("None", "none", ""):
            assert len(line.get_xdata()) >= 2, line.get_label()
    assert any(line.get_linestyle() not in ("None", "none", "") for line in ax.get_lines()) == lines
    legends = [child for child in ax.get_children() if isinstance(child, Legend)]
    texts = [t.get_text() for legend in legends for t in legend.get_texts()]
    shown = [_shown(h) for legend in legends for h in legend.legend_handles]
    assert len(set(shown)) == len(shown), list(zip(texts, shown))  # no two entries look the same
    assert any(line is not None for _, _, line in shown) == lines  # line styles in a legend only where lines are drawn
    # one entry per k (its colour) and one per measure (its marker, and line style where drawn)
    ks = {f"k={k:.0%}" if isinstance(k, float) else f"k={k}" for g in groups for k in g["ks"]}
    assert set(texts) == ks | measures
    plt.close(fig)


@pytest.mark.parametrize("steps", [4, 11])
def test_overhead_is_not_measured_from_too_few_steps(monkeypatch, steps):
    """bench=smoke times 4 steps after 2 warm-up steps: too few to hold one of Lightning's logger
    writes (every 10 steps) in its share, so the overhead is reported as not measured (null), not
    as a number; from the minimum on it is measured."""
    import benchmarks.overhead as overhead
    from benchmarks.report import overhead_md

    # the rounds' rates as a noisy short run gave them (+5115.6%); no training here
    monkeypatch.setattr(overhead, "lightning_round", lambda suite, batches, env: 1.0)
    monkeypatch.setattr(overhead, "plain_round", lambda suite, batches, env: 52.156)
    cfg = parse_bench_config(
        {
            "overhead": {
                "model": {"arch": "lookwhere", "preset": "tiny", "img_size": [28, 28]},
                "steps": steps,
                "warmup_steps": 2,
                "rounds": 1,
            }
        }
    )
    logged: list[str] = []
    (row,) = overhead.run_overhead(cfg.overhead, None, logged.append)
    md = overhead_md([row], cfg)
    if steps < overhead.MIN_STEPS:
        assert overhead.MIN_STEPS == 11  # one whole logging period of 10 intervals between the ends of 11 steps
        assert row["slowdown"] is None and json.loads(json.dumps(row))["slowdown"] is None  # null in results.json
        assert row["min_steps"] == 11
        assert logged[-1] == (
            "Lightning step-time overhead not measured: too few timed steps (4 after 2 warm-up steps; at least 11 needed)"
        )
        assert "not measured (4 timed steps < 11)" in md and "%" not in md
    else:
        assert row["slowdown"] == pytest.approx(51.156)
        assert logged[-1] == "Lightning step-time overhead +5115.6% (1.00 vs 52.16 steps/s, 11 timed steps)"
        assert "+5115.6%" in md
