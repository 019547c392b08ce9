"""``predict`` for every kind of module: segmentation masks as palette PNGs at the original image
size (the tiny ADE20K copy, demo_seg), the distilled selectors' choices (demo_distill,
demo_vlw_distill), and the final line naming what was written."""

from __future__ import annotations

import csv
import importlib
import inspect
import os
import pkgutil
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import lw_lightning.modules
from lw_lightning.cli import main
from lw_lightning.data import ade20k
from lw_lightning.data.ade20k import FOLDER
from lw_lightning.modules.distill import LookWhereDistill
from lw_lightning.modules.segmentation import Segmenter
from lw_lightning.modules.video_distill import VideoLookWhereDistill

from .conftest import ROOT, tiny_overrides

#: a training run as short as a checkpoint allows (one step, one validation batch)
SHORT = [
    "trainer.max_steps=1",
    "trainer.limit_val_batches=1",
    "callbacks.images=null",
    "callbacks.flops=null",
]


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def _run_data(run_dir: Path) -> pl.LightningDataModule:
    """The run's DataModule (from its config.yaml), set up for predict."""
    data = instantiate(OmegaConf.load(run_dir / "config.yaml").data, _convert_="all")
    data.setup("predict")
    return data


def _final_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_every_lightning_module_has_a_predict_step():
    """Lightning's default predict_step calls ``self(batch)``: a dict batch fails inside it."""
    found = []
    for info in pkgutil.iter_modules(lw_lightning.modules.__path__):
        mod = importlib.import_module(f"lw_lightning.modules.{info.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, pl.LightningModule) and cls.__module__ == mod.__name__ and cls.__name__ != "SafeCheckpointModule":
                found.append(cls)
    assert {c.__name__ for c in found} >= {"ImageClassifier", "Segmenter", "LookWhereDistill", "VideoLookWhereDistill"}
    assert [c.__name__ for c in found if c.predict_step is pl.LightningModule.predict_step] == []


# ---------------------------------------------------------------------------------- segmentation

ADE_SIDE = 56  # tiny input (4x4 patches of 14 px)


def _ade_overrides(root: Path, out: Path) -> list[str]:
    return [
        "experiment=lookwhere_ade20k_518_k1024",
        f"output_dir={out}",
        f"data.root={root}",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        f"data.crop_size={ADE_SIDE}",
        f"data.scale=[{4 * ADE_SIDE},{ADE_SIDE}]",
        "module.model.preset=tiny",
        f"module.model.img_size=[{ADE_SIDE},{ADE_SIDE}]",
        "module.model.selector_img_size=28",
        "module.train_k=8",
        "module.eval_k=8",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


@pytest.fixture(scope="module")
def ade_run(tmp_path_factory) -> tuple[Path, list[str], Path]:
    """A one-step ADE20K run on a tiny copy: (data root, its overrides, run dir)."""
    tmp = tmp_path_factory.mktemp("ade_run")
    root = ade20k.make_tiny(tmp / "ade", n_train=2, n_val=3, scale=0.3)
    args = _ade_overrides(root, tmp / "runs")
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["fit", *args, *SHORT]) == 0
    finally:
        os.chdir(old)
    return root, args, tmp / "runs" / "lookwhere_ade20k_518_k1024" / "version_0"


def test_ade20k_predict_writes_palette_masks_at_the_original_size(ade_run, capsys):
    root, args, run_dir = ade_run
    capsys.readouterr()
    assert main(["predict", *args, "ckpt_path=last"]) == 0, capsys.readouterr().err[-2000:]
    line = _final_line(capsys)
    assert f"{run_dir / 'predictions.csv'}" in line and f"3 masks in {run_dir / 'predictions' / 'masks'}/" in line, line

    # what the model computes: logits resized to each image's original size, argmax
    module = Segmenter.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = _run_data(run_dir)
    expected = {}
    with torch.no_grad():
        for batch in data.predict_dataloader():
            logits, _ = module(batch["image"], k=8)
            for i, index in enumerate(batch["index"].tolist()):
                h, w = batch["label_size"][i].tolist()
                expected[index] = F.interpolate(logits[i : i + 1], size=(h, w), mode="bilinear").argmax(1)[0].numpy()

    rows = _rows(run_dir / "predictions.csv")
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    colours = np.vstack([[0, 0, 0], ade20k.palette()])  # 0 = "other", class c stored as c + 1
    for r in rows:
        stem = f"ADE_val_{int(r['index']) + 1:08d}"
        assert r["source"] == f"images/validation/{stem}.jpg"
        assert r["mask"] == f"predictions/masks/{stem}.png"
        assert len(r["selected"].split()) == 8
        with Image.open(root / FOLDER / "images" / "validation" / f"{stem}.jpg") as img:
            size = img.size
        with Image.open(run_dir / r["mask"]) as png:
            assert png.mode == "P" and png.size == size  # the input image's original size
            palette = np.array(png.getpalette(), dtype=np.uint8).reshape(-1, 3)
            values = np.array(png)
        np.testing.assert_array_equal(palette[:151], colours)
        # stored as the dataset stores its annotations: class c (0..149) is value c + 1
        np.testing.assert_array_equal(values.astype(np.int64), expected[int(r["index"])] + 1)


def test_ade20k_predict_leaves_an_unreadable_image_without_a_mask(ade_run, tmp_path, capsys):
    root, args, run_dir = ade_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    image = copy / FOLDER / "images" / "validation" / "ADE_val_00000002.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # truncated: the header survives, the scan data does not
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert main(["predict", *args, f"data.root={copy}", f"ckpt_path={ckpt}", "name=damaged"]) == 0
    out = run_dir.parents[1] / "damaged" / "version_0"
    assert "2 masks in" in _final_line(capsys)
    rows = _rows(out / "predictions.csv")
    assert [r["mask"] for r in rows] == ["predictions/masks/ADE_val_00000001.png", "", "predictions/masks/ADE_val_00000003.png"]
    assert sorted(p.name for p in (out / "predictions" / "masks").iterdir()) == ["ADE_val_00000001.png", "ADE_val_00000003.png"]


def test_demo_seg_predict_writes_palette_masks(tmp_path, capsys):
    args = ["experiment=demo_seg", *tiny_overrides(tmp_path, "lookwhere"), "module.train_k=16", "module.eval_k=16"]
    assert main(["fit", *args, *SHORT]) == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    assert main(["predict", *args, "ckpt_path=last"]) == 0, capsys.readouterr().err[-2000:]
    run_dir = tmp_path / "runs" / "demo_seg" / "version_0"
    line = _final_line(capsys)
    assert line.startswith(f"predict done: wrote {run_dir / 'predictions.csv'} and 8 masks in "), line

    module = Segmenter.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = _run_data(run_dir)
    batch = next(iter(data.predict_dataloader()))
    with torch.no_grad():
        logits, _ = module(batch["image"], k=16)
    expected = F.interpolate(logits, size=(112, 112), mode="bilinear").argmax(1).numpy()

    rows = _rows(run_dir / "predictions.csv")
    assert [r["source"] for r in rows] == [f"predict/{i}" for i in range(8)]
    for i, r in enumerate(rows):
        assert r["mask"] == f"predictions/masks/{i}.png"
        with Image.open(run_dir / r["mask"]) as png:
            assert png.mode == "P" and png.size == (112, 112)
            palette = np.array(png.getpalette(), dtype=np.uint8).reshape(-1, 3)
            values = np.array(png)
        # one colour per class (background 0 black), as the synthetic masks store them
        assert len(palette) == 4 and palette[0].tolist() == [0, 0, 0] and len({tuple(c) for c in palette}) == 4
        np.testing.assert_array_equal(values.astype(np.int64), expected[i])


# ---------------------------------------------------------------------------------- distillation


def test_distill_predict_writes_the_selected_patches(tmp_path, capsys):
    args = [
        "experiment=demo_distill",
        *tiny_overrides(tmp_path, "lookwhere"),
        "module.teacher.checkpoint=null",
        "module.teacher.preset=tiny",
        "module.teacher.img_size=[112,112]",
        "module.k_min=4",
        "module.k_max=16",
        "module.val_k=8",
    ]
    assert main(["fit", *args, *SHORT]) == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    assert main(["predict", *args, "ckpt_path=last"]) == 0, capsys.readouterr().err[-2000:]
    run_dir = tmp_path / "runs" / "demo_distill" / "version_0"
    assert _final_line(capsys) == f"predict done: wrote {run_dir / 'predictions.csv'}  [run dir: {run_dir}]"

    module = LookWhereDistill.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = _run_data(run_dir)
    with torch.no_grad():
        expected = module.student(next(iter(data.predict_dataloader()))["image"], k=8)["selected"]
    rows = _rows(run_dir / "predictions.csv")
    assert list(rows[0]) == ["index", "source", "selected"]
    assert [r["source"] for r in rows] == [f"predict/{i}" for i in range(8)]
    assert [[int(j) for j in r["selected"].split()] for r in rows] == expected.tolist()


def test_video_distill_predict_writes_the_selected_tubelets(tmp_path, capsys):
    args = [
        "experiment=demo_vlw_distill",
        f"output_dir={tmp_path / 'runs'}",
        "data.num_frames=8",
        "data.img_size=32",
        "data.num_train=4",
        "data.num_val=4",
        "data.num_test=4",
        "data.batch_size=4",
        "data.cache=false",
        "module.model.num_frames=8",
        "module.model.img_size=32",
        "module.model.selector_num_frames=4",
        "module.model.selector_img_size=16",
        "module.teacher.checkpoint=null",
        "module.teacher.model={preset: tiny, num_frames: 8, img_size: 32, tubelet: [2, 8, 8]}",
        "module.val_k=4",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    assert main(["fit", *args, *SHORT]) == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    assert main(["predict", *args, "ckpt_path=last"]) == 0, capsys.readouterr().err[-2000:]
    run_dir = tmp_path / "runs" / "demo_vlw_distill" / "version_0"
    assert _final_line(capsys) == f"predict done: wrote {run_dir / 'predictions.csv'}  [run dir: {run_dir}]"

    module = VideoLookWhereDistill.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = _run_data(run_dir)
    with torch.no_grad():
        expected = module.student(next(iter(data.predict_dataloader()))["video"], k=4)["selected"]
    rows = _rows(run_dir / "predictions.csv")
    assert list(rows[0]) == ["index", "source", "selected"]
    assert [[int(j) for j in r["selected"].split()] for r in rows] == expected.tolist()


class NoPredict(pl.LightningModule):
    """A module of one's own (``--config-dir`` recipe) without a predict_step."""

    def __init__(self, model: dict, num_classes: int = 4, **kwargs) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)


def test_a_module_without_predict_step_is_one_line_exit_2(tmp_path, capsys):
    code = main(["predict", "experiment=demo_vit", *tiny_overrides(tmp_path), "module._target_=tests.test_predict.NoPredict"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: predict: tests.test_predict.NoPredict has no predict_step"), err
    assert not (tmp_path / "runs").exists()  # nothing written
