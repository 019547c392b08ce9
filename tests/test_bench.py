"""The bench command: config validation, the activation-memory meter, the PyAV reader, a smoke run.

Speed is never asserted here; only that things are measured and reported.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from lw_lightning.bench.common import saved_activation_bytes
from lw_lightning.bench.config import parse_bench_config
from lw_lightning.cli import main
from lw_lightning.config import ConfigError


def test_bench_config_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'bench.images.groups'"):
        parse_bench_config({"images": {"grops": []}})
    with pytest.raises(ConfigError, match="unknown suite"):
        parse_bench_config({"suites": ["imagez"]})
    cfg = parse_bench_config({"images": {"groups": [{"size": 994, "ks": [0.05]}]}})
    assert cfg.images.groups[0].size == 994 and cfg.images.groups[0].batch_sizes == [1, 8]


def test_cli_bench_config_error_exits_2(root, capsys):
    assert main(["bench", "--config", str(root / "conf/bench/smoke.yaml"), "bench.repeats=0"]) == 2
    assert "bench.repeats" in capsys.readouterr().err


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
    from lw_lightning.bench.data import read_clip_frames_pyav, write_realistic_video
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
    assert main(["bench", "--config", str(root / "conf/bench/smoke.yaml"), f"output_dir={out}"]) == 0
    md = (out / "benchmarks.md").read_text()
    for title in ("LookWhere vs full-resolution ViT", "ViViT with vs without TokenLearner", "Kinetics data loading", "Lightning vs a plain"):
        assert title in md
    assert (out / "speedup_vs_resolution.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    full, lw = results["images"][0], results["images"][1]
    assert full["arch"] == "vit" and lw["arch"] == "lookwhere" and lw["flops"] < full["flops"]
    assert lw["act_bytes"] < full["act_bytes"]
    assert all(r["infer_b1_s"] > 0 for r in results["images"])
