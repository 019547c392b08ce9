"""``smoke=true``: a GPU recipe as a CPU smoke test of its real data path (lw_lightning/smoke.py)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from lw_lightning.cli import main
from lw_lightning.config import load_config
from lw_lightning.data import ade20k, imagenet, traffic_signs
from lw_lightning.runtime import warn_if_gpu_recipe_on_cpu
from lw_lightning.tasks import build

from .conftest import ROOT

EXPERIMENTS = ROOT / "conf" / "experiment"
GPU_WARNING = "is sized for a GPU"
#: what smoke=true may change in the data node: batches and loader processes, not the data path
LOADER_KEYS = {"batch_size", "eval_batch_size", "num_workers"}
DATASETS = {
    "ImageNetDataModule": "imagenet",
    "ADE20KDataModule": "ade20k",
    "TrafficSignsDataModule": "traffic_signs",
    "KineticsDataModule": "kinetics",
}


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


@functools.cache
def gpu_recipes() -> list[str]:
    """The recipes marked ``requires: gpu`` (composed: also those inheriting the mark)."""
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if load_config(p, allow_missing=True).get("requires") == "gpu")


def _dataset(recipe: str) -> str:
    """The tiny layout a recipe reads: by its DataModule."""
    target = str(load_config(EXPERIMENTS / f"{recipe}.yaml", allow_missing=True).data._target_)
    return DATASETS[target.rsplit(".", 1)[-1]]


def test_smoke_shrinks_the_model_and_keeps_the_recipes_data_path(tmp_path):
    root = traffic_signs.make_tiny(tmp_path / "sts")
    where = [f"data.root={root}", f"output_dir={tmp_path / 'runs'}"]
    recipe = load_config("lookwhere_sts_994_k5", where, allow_missing=True)
    cfg = load_config("lookwhere_sts_994_k5", ["smoke=true", *where])
    # the data node is the recipe's (DataModule, root, 994 px, augmentation) but for batches and workers
    plain = OmegaConf.to_container(cfg.data)
    assert {k: v for k, v in plain.items() if k not in LOADER_KEYS} == {
        k: v for k, v in OmegaConf.to_container(recipe.data).items() if k not in LOADER_KEYS
    }
    assert (cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.num_workers) == (2, 2, 0)
    # the model: tiny and random, at the recipe's input size, selector input and k
    model = cfg.module.model
    assert (model.preset, list(model.img_size), model.selector_img_size, model.pretrained) == ("tiny", [994, 994], 154, None)
    assert cfg.module.train_k == recipe.module.train_k == 0.05
    assert (cfg.trainer.fast_dev_run, cfg.trainer.precision) == (2, "32-true")
    assert warn_if_gpu_recipe_on_cpu(cfg, "fit") is None  # a smoke run says nothing about GPU sizes

    trainer, module, datamodule = build(cfg, "fit")
    assert type(datamodule) is traffic_signs.TrafficSignsDataModule and datamodule.root == str(root)
    assert (module.model_cfg.preset, module.model_cfg.embed_dim, module.model_cfg.depth) == ("tiny", 96, 4)
    assert sum(p.numel() for p in module.parameters()) < 2_000_000  # ViT-B: 86M
    assert trainer.fast_dev_run == 2
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))  # real files through the recipe's transforms
    assert batch["image"].shape == (2, 3, 994, 994)


def test_smoke_gives_every_gpu_recipe_a_tiny_model_at_its_input_layout():
    assert len(gpu_recipes()) >= 20
    for recipe in gpu_recipes():
        full = load_config(EXPERIMENTS / f"{recipe}.yaml", allow_missing=True)
        cfg = load_config(EXPERIMENTS / f"{recipe}.yaml", ["smoke=true"])  # no ??? left: pretrained, teacher
        model, was = cfg.module.model, full.module.model
        assert model.preset == "tiny" and model.get("pretrained") is None, recipe
        assert cfg.trainer.fast_dev_run == 2 and cfg.data._target_ == full.data._target_, recipe
        for key in ("img_size", "num_frames", "tubelet", "arch", "tokenlearner_tokens", "selector_num_frames"):
            assert model.get(key) == was.get(key), (recipe, key)
        if was.preset in ("vit_b16", "vit_l16"):  # patch 16 kept: the same token grid
            assert model.patch_size == 16 and model.reg_tokens == 0, recipe
        if isinstance(was.get("tokenlearner_loc"), int):  # a block index: scaled from 12 to 4 blocks
            assert model.tokenlearner_loc == round(was.tokenlearner_loc * 4 / 12), recipe
        if cfg.module.get("teacher") is not None:  # a random tiny teacher on the student's grid
            teacher = cfg.module.teacher
            assert teacher.checkpoint is None and teacher.model.preset == "tiny", recipe
            assert [teacher.model[k] for k in ("num_frames", "img_size")] == [model.num_frames, model.img_size]


def test_command_line_overrides_win_over_smoke(tmp_path):
    cfg = load_config("vivit_b_tl8_k400", ["data.batch_size=4", "smoke=true", "trainer.fast_dev_run=1"])
    assert (cfg.data.batch_size, cfg.data.eval_batch_size, cfg.trainer.fast_dev_run) == (4, 2, 1)
    assert load_config("lookwhere_sts_994_k5", ["smoke=false"]).module.model.preset == "base"


@pytest.mark.parametrize(
    "args, message",
    [
        (["smoke=yes"], "error: smoke=yes: expected true or false"),
        (["smok=true"], "error: unknown key 'smok' (did you mean 'smoke'?)"),
        (["smoke=true", "ckpt_path=x.ckpt"], "error: smoke=true builds a tiny random model, which cannot load ckpt_path=x.ckpt"),
        (["smoke=true,false"], "error: 'smoke=true,false': smoke cannot be swept"),
    ],
)
def test_smoke_mistakes_are_one_line_errors(args, message, tmp_path, capsys):
    code = main(["fit", "experiment=lookwhere_sts_994_k5", f"output_dir={tmp_path}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err


def test_smoke_with_a_swept_recipe_is_one_line_error(tmp_path, capsys):
    code = main(["fit", "-m", "experiment=lookwhere_sts_994_k5,vit_sts_994", "smoke=true", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "error: 'experiment=lookwhere_sts_994_k5,vit_sts_994': smoke=true shrinks one recipe at a time; "
        "sweep experiment without it"
    ]


@pytest.mark.slow
def test_smoke_run_of_every_gpu_recipe_takes_about_a_minute(tmp_path_factory, kinetics_root):
    # the CLI as a user types it, on tiny copies in each loader's real layout
    base = tmp_path_factory.mktemp("tiny")
    roots = {
        "imagenet": imagenet.make_tiny(base / "imagenet"),
        "ade20k": ade20k.make_tiny(base / "ade"),
        "traffic_signs": traffic_signs.make_tiny(base / "sts"),
        "kinetics": kinetics_root,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = {}
    for recipe in gpu_recipes():
        cmd = [sys.executable, "-m", "lw_lightning", "fit", f"experiment={recipe}", "smoke=true"]
        cmd += [f"data.root={roots[_dataset(recipe)]}", f"output_dir={base / 'runs'}"]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        times[recipe] = time.monotonic() - t0
        print(f"{recipe}: {times[recipe]:.1f} s", flush=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "fit done" in proc.stdout and GPU_WARNING not in proc.stderr, recipe
        assert "`Trainer.fit` stopped: `max_steps=2` reached" in proc.stderr, recipe  # two training steps ran
    print(f"total {sum(times.values()):.0f} s, slowest {max(times, key=times.get)} {max(times.values()):.1f} s")
    assert max(times.values()) < 180  # about a minute each on the 2-core CPU (generous for a loaded machine)
