"""benchmarks/gpu_suite.sh: the CPU dry run (same config, suites and steps at tiny sizes) writes the
table; the report reads partial and timed-out runs."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks import gpu_suite_report
from lw_lightning.data.video_io import torchcodec_problem

from .conftest import ROOT


def test_gpu_suite_dry_run_writes_one_table(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_suite.sh", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    md = (out / "gpu_suite.md").read_text()
    assert md.startswith("## GPU suite (DRY RUN") and md.count("| part | case | result | compared |") == 1
    rows = [ln.split(" | ") for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| part")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in md.splitlines() if ln.startswith("| step ")]
    steps = {c[3]: c[2] for c in cells}  # "log: images.log" -> "ok, 16 s"
    assert len(steps) == 5 and all(v.startswith("ok") for v in steps.values()), steps
    cases = {r[0].strip("| "): [] for r in rows}
    for r in rows:
        cases[r[0].strip("| ")].append(r[1])
    assert any("ViT-tiny full" in c for c in cases["images"]) and any("LookWhere-tiny" in c for c in cases["images"])
    assert any("TokenLearner" in c for c in cases["video"]) and len(cases["video"]) == 2
    loader = [r for r in rows if r[0] == "| loader"]
    assert loader and "plain decord" in loader[0][3] and "training" in loader[0][3]
    decoders = {"torchcodec" if "torchcodec" in r[1] else "decord" for r in loader}
    assert decoders == ({"decord"} if torchcodec_problem() else {"decord", "torchcodec"})  # torchcodec where it runs
    assert "skipped" in next(r[2] for r in rows if r[0] == "| pytest -m gpu")  # no CUDA here
    assert next(r[2] for r in rows if r[1] == "verdict").startswith("all finite")
    assert {"classification", "video"} <= set(cases["amp_check"])


def test_report_names_failed_and_timed_out_steps(tmp_path):
    (tmp_path / "steps.tsv").write_text("images\t124\t150\t150\nvideo\t1\t3\t75\ndata\t0\t20\t100\n")
    (tmp_path / "amp_check.log").write_text(
        "device: cpu\ntask                 32-true    bf16-mixed rel bf16-mixed\nvideo  1.000000  1.010000  1.00e-02\n"
        "all finite and within 3% of fp32\n"
    )
    md = gpu_suite_report.render(tmp_path)
    assert "TIMED OUT after 150 s (limit 150 s)" in md and "FAILED (exit 1), 3 s" in md and "ok, 20 s" in md
    assert "| amp_check | video | 32-true 1.000000, bf16-mixed 1.010000 | bf16-mixed 1.00e-02 relative to fp32 |" in md
    assert "| pytest -m gpu | tests marked gpu | no summary line | — |" in md
    assert gpu_suite_report.main([str(tmp_path / "absent")]) == 2


def test_unknown_argument_is_one_line(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "gpu_suite.sh: unknown argument '--bogus' (expected --out DIR or --dry-run)"
    )
