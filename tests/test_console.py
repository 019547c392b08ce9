"""What a first run prints (issue 24, items 7 and 9): what the user needs and nothing false, and one
line, not a traceback, for a bad batch size or a value Hydra cannot parse."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lw_lightning.cli import main
from lw_lightning.config import parse_overrides

from .conftest import ROOT, tiny_overrides


def _run(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: Lightning's console lines go to the process's own stderr."""
    return subprocess.run(
        [sys.executable, "-m", "lw_lightning", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_first_run_console_has_no_adverts_no_zero_flops_and_no_callback_warning(tmp_path: Path) -> None:
    common = [
        *tiny_overrides(tmp_path, size=56),
        "data.num_train=16",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.enable_model_summary=true",
        "callbacks.images=null",
    ]
    fit = _run("fit", "experiment=demo_vit", *common)
    assert fit.returncode == 0, fit.stderr[-2000:]
    text = fit.stdout + fit.stderr
    assert "Tip:" not in text and "litlogger" not in text and "litmodels" not in text
    assert "LeafSpec" not in text
    assert "Total Flops" not in text  # Lightning's "0 Total Flops": it never counted
    flops = [line for line in text.splitlines() if line.endswith("FLOPs per sample (forward, perf/gflops_per_sample)")]
    assert len(flops) == 1 and flops[0].split()[:2] == ["21.1", "M"], flops  # the tiny ViT at 56 px, as logged
    assert "perf/gflops_per_sample=0.0211" in fit.stdout

    test = _run("test", "experiment=demo_vit", *common, "ckpt_path=last")
    assert test.returncode == 0, test.stderr[-2000:]
    assert "callbacks used to create the checkpoint" not in test.stderr  # evaluation drops them on purpose
    assert "Tip:" not in test.stdout + test.stderr


def test_without_the_flops_callback_the_line_is_left_out(tmp_path: Path) -> None:
    from lw_lightning.callbacks.model_summary import ModelSummary

    lines: list[str] = []
    summary = ModelSummary()
    summary._flops = None
    import lw_lightning.callbacks.model_summary as mod

    class Capture:
        def info(self, text):
            lines.extend(text.splitlines())

    real = mod.log
    mod.log = Capture()  # type: ignore[assignment]
    try:
        summary.summarize([("Name", ["net"]), ("Params", ["1 K"])], 1000, 1000, 0.004, {"train": 1, "eval": 0}, 0)
        summary._flops = 2_000_000
        summary.summarize([("Name", ["net"]), ("Params", ["1 K"])], 1000, 1000, 0.004, {"train": 1, "eval": 0}, 0)
    finally:
        mod.log = real
    assert not any("Flops" in line or "FLOPs" in line for line in lines[: len(lines) // 2])
    assert lines[-1].startswith("2.0 M") and lines[-1].endswith("FLOPs per sample (forward, perf/gflops_per_sample)")


@pytest.mark.parametrize("value", ["0", "-4"])
def test_batch_size_below_one_is_one_line(tmp_path, capsys, monkeypatch, value) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["fit", "experiment=demo_vit", *tiny_overrides(tmp_path), f"data.batch_size={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: data.batch_size must be a positive number of samples, got {value}"


def test_eval_batch_size_and_workers_are_checked(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["test", "experiment=demo_vit", *tiny_overrides(tmp_path), "data.eval_batch_size=0"]) == 2
    assert capsys.readouterr().err.strip() == "error: data.eval_batch_size must be a positive number of samples, got 0"
    assert main(["fit", "experiment=demo_vit", *tiny_overrides(tmp_path), "data.num_workers=-1"]) == 2
    assert "data.num_workers must be 0 (load in the main process) or more, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "words, value",
    [
        (["data.root=/data/my", "sts"], "/data/my sts"),  # unquoted: the shell split the value at its space
        (["data.root=/data/my sts (copy)"], "/data/my sts (copy)"),
        (["data.root=~/my sts"], "~/my sts"),
        (["data.root=/data/trafikskyltar/sörmland"], "/data/trafikskyltar/sörmland"),
        (["data.root=/data/it's here"], "/data/it's here"),
    ],
)
def test_a_value_hydra_cannot_parse_says_how_to_quote_it(capsys, monkeypatch, words, value) -> None:
    """One line that ends with the override to type, and that override gives the intended value."""
    monkeypatch.chdir(ROOT)
    assert main(["fit", "experiment=lookwhere_sts_994_k5", *words]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot parse override"), err
    assert "quote" in err
    suggested = shlex.split(err.rsplit(": " if "inside the shell's quotes" in err else "quote it, ", 1)[1])
    assert len(suggested) == 1
    assert parse_overrides(suggested)[0].value() == value


def test_hydra_syntax_gets_no_quoting_hint(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["fit", "experiment=demo_vit", "module.eval_ks=[1,2"]) == 2
    assert "quote" not in capsys.readouterr().err
