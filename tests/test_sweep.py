"""Hydra sweeps (-m): every job gets its own run directory with its resolved config."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lw_lightning.cli import main

from .conftest import tiny_overrides


@pytest.fixture(autouse=True)
def _cwd(root, monkeypatch):
    monkeypatch.chdir(root)


@pytest.mark.slow  # three one-step fits: ~30 s of CPU
def test_three_job_sweep_runs_each_in_its_own_run_dir(tmp_path, capsys):
    one_step = [
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "callbacks.images=null",
        "callbacks.flops=null",
    ]
    code = main(
        ["fit", "-m", "experiment=demo_vit", *tiny_overrides(tmp_path, "lookwhere"), *one_step, "module.train_k=0.05,0.1,0.2"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("fit done:") == 3
    configs = sorted((tmp_path / "runs" / "demo_vit" / "multirun").glob("*/*/config.yaml"), key=lambda p: int(p.parent.name))
    assert [p.parent.name for p in configs] == ["0", "1", "2"]  # one sweep dir, jobs numbered as Hydra does
    for config, k in zip(configs, (0.05, 0.1, 0.2)):
        job = config.parent
        saved = OmegaConf.load(config)
        assert (
            saved.module.train_k == k and saved.logger.version == f"multirun/{job.parent.name}/{job.name}"
        )  # resolved, this job's
        recorded = [o.lstrip("+") for o in OmegaConf.load(job / ".hydra" / "overrides.yaml")]  # Hydra's record of the job
        assert f"module.train_k={k}" in recorded  # ("++" where the recipe did not hold the key)
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert json.loads((job / "summary_fit.json").read_text())["run_dir"] == str(job)
