"""GPU checks (skipped without CUDA): 16-mixed and bf16-mixed losses finite and close to fp32 on a
fixed batch for every task, and a short 16-mixed run through the CLI. The same numbers are printed
by ``python -m benchmarks.precision``."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.precision import TASKS, compare
from lw_lightning.cli import main

from .conftest import ROOT, tiny_overrides

pytestmark = pytest.mark.gpu


def test_mixed_precision_losses_close_to_fp32_on_gpu():
    precisions = ("32-true", "16-mixed") + (("bf16-mixed",) if torch.cuda.is_bf16_supported() else ())
    table = compare("cuda", precisions)
    for task, losses in table.items():
        for precision in precisions:
            assert math.isfinite(losses[precision]), (task, losses)
            assert losses[precision] == pytest.approx(losses["32-true"], rel=3e-2), (task, precision, losses)
    assert set(table) == set(TASKS)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_short_mixed_precision_fit_on_gpu(precision, tmp_path, monkeypatch, capsys):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    monkeypatch.chdir(ROOT)
    args = [
        *tiny_overrides(tmp_path, "lookwhere"),
        "trainer.accelerator=gpu",
        f"trainer.precision={precision}",
        "trainer.max_epochs=2",
        "module.eval_k=8",
    ]
    assert main(["fit", "experiment=demo_vit", *args]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fit done:"))
    assert "val/loss=nan" not in line and "train/loss=nan" not in line
