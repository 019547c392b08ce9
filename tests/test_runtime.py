"""Runtime behaviour a user meets: GPU-sized recipes and low precision on a CPU warn once,
SIGTERM stops a fit at a batch boundary with a resumable last.ckpt (status 143)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lw_lightning.callbacks.sigterm import SIGTERM_EXIT_STATUS
from lw_lightning.cli import main
from lw_lightning.config import TOP_LEVEL_KEYS, load_config
from lw_lightning.runtime import warn_if_gpu_recipe_on_cpu
from lw_lightning.tasks import find_last_checkpoint, run

from .conftest import ROOT, tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"
EXPERIMENTS = ROOT / "conf" / "experiment"
GPU_WARNING = "is sized for a GPU"
PRECISION_WARNING = "on the CPU is much slower than fp32"


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


# ---------------------------------------------------------------------------- GPU-sized recipes


def test_gpu_recipes_are_marked_and_demo_recipes_are_not():
    assert "requires" in TOP_LEVEL_KEYS
    marked = {p.stem for p in EXPERIMENTS.glob("*.yaml") if load_config(p, allow_missing=True).get("requires") == "gpu"}
    unmarked = {p.stem for p in EXPERIMENTS.glob("*.yaml")} - marked
    assert unmarked == {
        "demo_vit",
        "demo_teacher",
        "demo_distill",
        "demo_finetune",
        "demo_tokenlearner",
        "demo_seg",
        "demo_video",
        "demo_vlw_vivit",
        "demo_vlw_tokenlearner",
        "demo_vlw_distill",
        "demo_vlw_finetune",
    }
    assert {
        "lookwhere_sts_994_k5",
        "vit_sts_native",
        "lookwhere_in1k_224_k128",
        "lookwhere_ade20k_518_k512",
        "vivit_b_tl16_k600",
    } <= marked


def test_unknown_requires_value_is_one_line_error(tmp_path, capsys):
    code = main(["fit", "experiment=demo_vit", "requires=tpu", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown value requires='tpu'" in err and len(err.splitlines()) == 1


def _fit_tiny(tmp_path: Path, *extra: str) -> None:
    cfg = load_config(
        DEMO, [*tiny_overrides(tmp_path), "trainer.max_steps=1", "trainer.limit_val_batches=1", "callbacks.images=null", *extra]
    )
    run(cfg, "fit")


def test_gpu_recipe_on_cpu_warns_once_with_the_smoke_test(tmp_path, capsys):
    # a GPU-marked run (the STS recipe's name, a ViT-B-wide model of one block so it runs here) without a CUDA device
    _fit_tiny(tmp_path, "requires=gpu", "name=lookwhere_sts_994_k5", "module.model.preset=base", "module.model.depth=1")
    lines = [line for line in capsys.readouterr().err.splitlines() if GPU_WARNING in line]
    assert len(lines) == 1
    assert lines[0].startswith("warning: recipe 'lookwhere_sts_994_k5' is sized for a GPU (vit-base at 112x112, batch 8, 32-true")
    assert "takes minutes" in lines[0] and lines[0].endswith(
        "for a CPU smoke test of its data and code add smoke=true (a tiny model, 2 batches)"
    )


def test_demo_recipe_and_smoke_runs_do_not_warn(tmp_path, capsys):
    _fit_tiny(tmp_path)  # demo recipe: runs anywhere
    _fit_tiny(tmp_path, "requires=gpu", "smoke=true")  # the CPU smoke test itself
    _fit_tiny(tmp_path, "requires=gpu", "trainer.fast_dev_run=true", "module.model.preset=base", "module.model.depth=1")
    _fit_tiny(tmp_path, "requires=gpu", "trainer.limit_train_batches=1", "module.model.preset=base", "module.model.depth=1")
    err = capsys.readouterr().err
    assert GPU_WARNING not in err and PRECISION_WARNING not in err


def _sts_on_cpu(*extra: str):
    return load_config("lookwhere_sts_994_k5", ["trainer.accelerator=cpu", *extra], allow_missing=True)


def test_gpu_warning_on_evaluation_makes_no_training_claims(capsys):
    for command, split in (("validate", "val"), ("test", "test"), ("predict", "predict")):
        line = warn_if_gpu_recipe_on_cpu(_sts_on_cpu(), command)
        assert line == (
            "warning: recipe 'lookwhere_sts_994_k5' is sized for a GPU (lookwhere-base at 994x994, batch 16, bf16-mixed) "
            f"and no CUDA device will be used: {command} runs it over every {split} batch on the CPU; "
            f"for a quick check add trainer.limit_{split}_batches=2"
        )
    assert warn_if_gpu_recipe_on_cpu(_sts_on_cpu("trainer.limit_test_batches=2"), "test") is None
    assert "training step" not in capsys.readouterr().err


def test_gpu_warning_is_silent_for_a_model_shrunk_below_vit_b():
    # the recipe's claims (minutes per training step, ViT-B at 994 px) are false for a smaller model
    for extra in (["module.model.preset=tiny"], ["module.model.preset=small"], ["module.model.embed_dim=192"], ["smoke=true"]):
        for command in ("fit", "test"):
            assert warn_if_gpu_recipe_on_cpu(_sts_on_cpu(*extra), command) is None, extra
    video = ["trainer.accelerator=cpu", "module.model.preset=tiny", "module.model.tokenlearner_loc=2"]
    assert warn_if_gpu_recipe_on_cpu(load_config("vivit_b_tl8_k400", video, allow_missing=True), "fit") is None
    # as wide as ViT-B or wider, it still warns (ViT-L at 512 px)
    vit_l = load_config("tokenlearner_l16_in1k_512_tl16_at50", ["trainer.accelerator=cpu"], allow_missing=True)
    assert "takes minutes" in warn_if_gpu_recipe_on_cpu(vit_l, "fit")
    assert "takes minutes" in warn_if_gpu_recipe_on_cpu(_sts_on_cpu(), "fit")


def test_bf16_on_cpu_warns_exactly_once(tmp_path, capsys):
    code = main(
        [
            "fit",
            "experiment=demo_vit",
            *tiny_overrides(tmp_path),
            "trainer.fast_dev_run=true",
            "callbacks.images=null",
            "trainer.precision=bf16-mixed",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if PRECISION_WARNING in line]
    assert (
        len(lines) == 1
        and lines[0].startswith("warning: precision bf16-mixed on the CPU")
        and "trainer.precision=32-true" in lines[0]
    )
    assert err.count("much slower than fp32") == 1


# ---------------------------------------------------------------------------- SIGTERM


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the fit and its loader workers), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def _sigterm_overrides(tmp_path: Path) -> list[str]:
    return [
        *tiny_overrides(tmp_path),
        "data.num_train=64",
        "data.batch_size=4",  # 16 steps per epoch
        "trainer.max_epochs=1000",  # would run for hours
        "trainer.limit_val_batches=1",
        "callbacks.images=null",
        "name=term",
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_fit_at_batch_boundary_with_resumable_last_ckpt(tmp_path):
    marker = tmp_path / "step"
    cmd = [
        sys.executable,
        "-m",
        "lw_lightning",
        "fit",
        "experiment=demo_vit",
        *_sigterm_overrides(tmp_path),
        "data.num_workers=2",  # loader workers must neither die from the signal nor outlive the run
        "callbacks.marker._target_=tests.scale_helpers.StepMarker",
        f"callbacks.marker.path={marker}",
        "callbacks.marker.delay=0.1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # own session and process group: the signal goes to the whole group, as from a shell or `timeout`
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while not (marker.is_file() and int(marker.read_text() or 0) >= 2):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        sent_at = int(marker.read_text())
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == SIGTERM_EXIT_STATUS == 143, err[-2000:]
    assert elapsed < 30
    assert "fit done" not in out
    report = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert (
        len(report) == 1
        and report[0].startswith("fit stopped by SIGTERM at global step")
        and "resume with ckpt_path=last" in report[0]
    )
    assert "killed by signal" not in err  # the workers did not die from the group's SIGTERM
    deadline = time.monotonic() + 10
    while _session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_members(proc.pid) == []  # no worker left behind

    cfg = load_config(DEMO, _sigterm_overrides(tmp_path))
    last, version = find_last_checkpoint(cfg)
    assert version == "version_0" and str(last) in report[0]
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    # the batch running when the signal came was finished, no more; mid-epoch (step 16 ends the
    # epoch), so this last.ckpt is the SIGTERM save, not an epoch-end or every-500-steps one
    assert sent_at <= step <= sent_at + 1 < 16

    resumed = run(load_config(DEMO, [*_sigterm_overrides(tmp_path), "ckpt_path=last", f"trainer.max_steps={step + 2}"]), "fit")
    assert resumed.trainer.global_step == step + 2
    assert resumed.log_dir == str(tmp_path / "runs" / "term" / "version_0")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_second_sigterm_stops_a_slow_step_at_once_keeping_the_previous_last_ckpt(tmp_path):
    # a training step that outlasts a scheduler's grace time (10 min here): step 3, after last.ckpt at step 2
    marker, err_file = tmp_path / "slow", tmp_path / "stderr"
    cmd = [
        sys.executable,
        "-m",
        "lw_lightning",
        "fit",
        "experiment=demo_vit",
        *_sigterm_overrides(tmp_path),
        "callbacks.last_every_n_steps.every_n_train_steps=2",
        "callbacks.slow._target_=tests.scale_helpers.SlowStep",
        f"callbacks.slow.path={marker}",
        "callbacks.slow.step=2",
        "callbacks.slow.seconds=600",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with err_file.open("w") as err_out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err_out, text=True, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not marker.is_file():
            assert proc.poll() is None, err_file.read_text()[-2000:]
            assert time.monotonic() < deadline, "training did not reach the slow step"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "waiting for the current step" not in err_file.read_text():
            assert time.monotonic() < deadline, "no line after the first SIGTERM: " + err_file.read_text()[-2000:]
            time.sleep(0.1)
        assert proc.poll() is None  # still inside the slow step
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = err_file.read_text()
    assert proc.returncode == SIGTERM_EXIT_STATUS == 143, err[-2000:]
    assert elapsed < 30
    first = [line for line in err.splitlines() if "got SIGTERM" in line]
    assert first == [
        "fit got SIGTERM: waiting for the current step to end, then saving last.ckpt and stopping "
        "(a second SIGTERM stops at once, without saving)"
    ]
    last = tmp_path / "runs" / "term" / "version_0" / "checkpoints" / "last.ckpt"
    second = [line for line in err.splitlines() if "second SIGTERM at" in line]
    assert second == [
        f"fit stopped at once by a second SIGTERM at global step 2, without saving: {last} is kept as it was; "
        "resume with ckpt_path=last"
    ]
    assert "stopped by SIGTERM at global step" not in err  # no save at the end of the step
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and "state_dict" in ckpt
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # nothing half-written beside it


# ---------------------------------------------------------------------------- pictures


def _curve() -> list[dict]:
    return [
        dict(label="ViT", model="ViT", k=None, tokens=64, flops=4e8, acc1=0.6),
        *(dict(label="LookWhere", model="LookWhere", k=k, tokens=k, flops=1e8 * k / 8, acc1=0.5 + k / 100) for k in (8, 16)),
    ]


def test_accuracy_plot_draws_a_labelled_chance_line(tmp_path):
    import matplotlib.pyplot as plt

    from lw_lightning.plots import accuracy_chance, accuracy_figure, plot_accuracy

    fig = accuracy_figure(_curve(), chance=0.25)
    ax = fig.axes[0]
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and chance[0].get_label() == "chance (25%)"
    assert list(chance[0].get_ydata()) == [25.0, 25.0] and chance[0].get_linestyle() == "--"
    assert "chance (25%)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    plain = accuracy_figure(_curve())
    assert not [line for line in plain.axes[0].get_lines() if line.get_label().startswith("chance")]
    plt.close(plain)
    assert (
        plot_accuracy(_curve(), tmp_path / "acc.png", chance=0.001) == tmp_path / "acc.png"
        and (tmp_path / "acc.png").stat().st_size > 0
    )
    # the bench rows carry the class count: chance only when all runs agree on it
    assert accuracy_chance([{**r, "num_classes": 4} for r in _curve()]) == 0.25
    assert accuracy_chance(_curve()) is None
    assert accuracy_chance([{**_curve()[0], "num_classes": 4}, {**_curve()[1], "num_classes": 10}]) is None


def test_selection_picture_has_a_legend_strip():
    from PIL import Image

    from lw_lightning.viz import BOX_RGB, HEAT_RGB, SELECTED_RGB, SELECTION_LEGEND, legend_strip, picture_grid

    tiles = [Image.new("RGB", (112, 112), (128, 128, 128)) for _ in range(8)]
    plain, captioned = picture_grid(tiles, ncols=4), picture_grid(tiles, ncols=4, legend=SELECTION_LEGEND)
    assert captioned.width == plain.width and captioned.height > plain.height
    assert captioned.crop((0, 0, plain.width, plain.height)).tobytes() == plain.tobytes()  # the grid is unchanged
    strip = np.asarray(captioned.crop((0, plain.height, captioned.width, captioned.height)))
    colours = {tuple(int(c) for c in px) for px in strip.reshape(-1, 3)}
    assert {HEAT_RGB, SELECTED_RGB, BOX_RGB} <= colours  # one swatch per layer of selection_overlay
    assert (strip.sum(-1) < 100).sum() > 200  # black caption text
    assert [text.split(" = ")[0] for text, _, _ in SELECTION_LEGEND] == ["heat", "yellow", "green"]
    assert (
        "selector map" in SELECTION_LEGEND[0][0]
        and "selected patches" in SELECTION_LEGEND[1][0]
        and "sign box" in SELECTION_LEGEND[2][0]
    )
    # too narrow for one line: the entries wrap and the strip grows
    assert legend_strip(150, SELECTION_LEGEND).height > legend_strip(1200, SELECTION_LEGEND).height
