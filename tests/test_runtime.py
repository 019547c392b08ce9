"""Runtime behaviour a user meets: GPU-sized recipes and low precision on a CPU warn once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lw_lightning.cli import main
from lw_lightning.config import TOP_LEVEL_KEYS, load_config
from lw_lightning.tasks import run

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
    marked = {p.stem for p in EXPERIMENTS.glob("*.yaml") if load_config([p], allow_missing=True).get("requires") == "gpu"}
    unmarked = {p.stem for p in EXPERIMENTS.glob("*.yaml")} - marked
    assert unmarked == {"demo_vit", "demo_distill", "demo_finetune", "demo_seg", "demo_video"}
    assert {"lookwhere_sts_994_k5", "vit_sts_native", "lookwhere_in1k_224_k128", "lookwhere_ade20k_518_k512", "vivit_b_tl16_k600"} <= marked


def test_unknown_requires_value_is_one_line_error(tmp_path, capsys):
    code = main(["fit", "--config", DEMO, "requires=tpu", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown value requires='tpu'" in err and len(err.splitlines()) == 1


def _fit_tiny(tmp_path: Path, *extra: str) -> None:
    cfg = load_config([DEMO], [*tiny_overrides(tmp_path), "trainer.max_steps=1", "trainer.limit_val_batches=1", "callbacks.images=null", *extra])
    run(cfg, "fit")


def test_gpu_recipe_on_cpu_warns_once_with_the_smoke_test(tmp_path, capsys):
    # a GPU-marked run (the STS recipe's values, tiny model so it runs here) without a CUDA device
    _fit_tiny(tmp_path, "requires=gpu", "name=lookwhere_sts_994_k5")
    lines = [line for line in capsys.readouterr().err.splitlines() if GPU_WARNING in line]
    assert len(lines) == 1
    assert lines[0].startswith("warning: recipe 'lookwhere_sts_994_k5' is sized for a GPU (vit-tiny at 112x112, batch 8, 32-true")
    assert "trainer.fast_dev_run=true" in lines[0] and "limit_train_batches" in lines[0] and "takes minutes" in lines[0]


def test_demo_recipe_and_smoke_runs_do_not_warn(tmp_path, capsys):
    _fit_tiny(tmp_path)  # demo recipe: runs anywhere
    _fit_tiny(tmp_path, "requires=gpu", "trainer.fast_dev_run=true")  # the CPU smoke test itself
    _fit_tiny(tmp_path, "requires=gpu", "trainer.limit_train_batches=1")
    err = capsys.readouterr().err
    assert GPU_WARNING not in err and PRECISION_WARNING not in err


def test_bf16_on_cpu_warns_exactly_once(tmp_path, capsys):
    code = main(["fit", "--config", DEMO, *tiny_overrides(tmp_path), "trainer.fast_dev_run=true", "callbacks.images=null", "trainer.precision=bf16-mixed"])
    assert code == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if PRECISION_WARNING in line]
    assert len(lines) == 1 and lines[0].startswith("warning: precision bf16-mixed on the CPU") and "trainer.precision=32-true" in lines[0]
    assert err.count("much slower than fp32") == 1
