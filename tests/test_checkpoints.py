"""Checkpoints, runs and k (issue 11): one always-newest last.ckpt, ``ckpt_path=last``/``best`` for
evaluation into the training run's folder, resuming a finished run, bad checkpoint files, no empty
run folders after a failed start, k checked when the module is built, no training batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lw_lightning.cli import main
from lw_lightning.config import load_config
from lw_lightning.models.checkpoint import export_official
from lw_lightning.models.config import model_config
from lw_lightning.models.lookwhere import FullResViT, LookWhere
from lw_lightning.tasks import run

from .conftest import ROOT, tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"
FINETUNE = "conf/experiment/demo_finetune.yaml"
DISTILL = "conf/experiment/demo_distill.yaml"


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _fast(tmp_path: Path, name: str, size: int = 56) -> list[str]:
    """A full-res ViT on 56 px images (16 patches): a training step takes well under a second."""
    return [
        *tiny_overrides(tmp_path, size=size),
        "data.num_train=8",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "callbacks.images=null",
        "callbacks.flops=null",
        f"name={name}",
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _lasts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("last*.ckpt"))


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[str]]:
    """One finished 1-epoch run (2 steps) of ``name=src``; returns (tmp dir, its overrides)."""
    tmp = tmp_path_factory.mktemp("trained")
    overrides = _fast(tmp, "src")
    old = Path.cwd()
    os.chdir(ROOT)
    try:
        run(load_config(DEMO, overrides), "fit")
    finally:
        os.chdir(old)
    return tmp, overrides


# ---------------------------------------------------------------------------- 1. last.ckpt


def test_one_last_ckpt_holds_the_final_step_and_resumes(tmp_path):
    # 4 steps per epoch, the step checkpoint at 3 and 6: it writes last.ckpt before the first epoch
    # ends (Lightning then wrote last-v1.ckpt), and the final step 8 is no multiple of 3
    overrides = [
        *_fast(tmp_path, "steps"),
        "data.num_train=16",
        "trainer.max_epochs=2",
        "callbacks.last_every_n_steps.every_n_train_steps=3",
    ]
    result = run(load_config(DEMO, overrides), "fit")
    run_dir = Path(result.log_dir)
    assert result.trainer.global_step == 8
    assert _lasts(run_dir) == ["last.ckpt"]
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 8

    resumed = run(load_config(DEMO, [*overrides, "trainer.max_epochs=3", "ckpt_path=last"]), "fit")
    assert resumed.log_dir == str(run_dir) and resumed.trainer.global_step == 12
    assert _lasts(run_dir) == ["last.ckpt"]
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 12


# ---------------------------------------------------------------------------- 2./3. evaluation


def test_evaluating_last_logs_into_the_training_run(trained, capsys):
    tmp, overrides = trained
    src = tmp / "runs" / "src"
    for command in ("validate", "test", "predict"):
        assert main([command, "experiment=demo_vit", *overrides, "ckpt_path=last"]) == 0, capsys.readouterr().err
        assert f"[run dir: {src / 'version_0'}]" in capsys.readouterr().out
    assert sorted(p.name for p in src.iterdir()) == ["version_0"]  # no version_1
    run_dir = src / "version_0"
    for name in ("summary_validate.json", "summary_test.json", "predictions.csv", "config_test.yaml"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary_test.json").read_text())
    assert summary["ckpt_path"] == str(run_dir / "checkpoints" / "last.ckpt") and "test/acc1" in summary["metrics"]
    assert json.loads((run_dir / "summary_fit.json").read_text())["command"] == "fit"  # untouched

    # ckpt_path=best: the best checkpoint recorded in the newest last.ckpt
    assert main(["test", "experiment=demo_vit", *overrides, "ckpt_path=best"]) == 0
    best = json.loads((run_dir / "summary_test.json").read_text())["ckpt_path"]
    assert Path(best).name == "epoch_000.ckpt"
    capsys.readouterr()
    assert main(["fit", "experiment=demo_vit", *overrides, "ckpt_path=best"]) == 2
    assert "ckpt_path=best is for validate/test/predict" in _one_error_line(capsys)


def test_evaluation_elsewhere_when_name_or_version_is_set(trained, capsys):
    tmp, overrides = trained
    ckpt = tmp / "runs" / "src" / "version_0" / "checkpoints" / "last.ckpt"
    assert main(["test", "experiment=demo_vit", *overrides, f"ckpt_path={ckpt}", "name=elsewhere"]) == 0
    assert (tmp / "runs" / "elsewhere" / "version_0" / "summary_test.json").is_file()
    assert main(["test", "experiment=demo_vit", *overrides, f"ckpt_path={ckpt}", "logger.version=mine"]) == 0
    assert (tmp / "runs" / "src" / "mine" / "summary_test.json").is_file()
    capsys.readouterr()


# ---------------------------------------------------------------------------- 4. finished run


def test_fit_last_on_a_finished_run_says_so_and_keeps_the_summary(trained, capsys):
    tmp, overrides = trained
    run_dir = tmp / "runs" / "src" / "version_0"
    summary = (run_dir / "summary_fit.json").read_bytes()
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["fit", "experiment=demo_vit", *overrides, "ckpt_path=last"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("fit: already finished:") and "global step 2" in out and "trainer.max_epochs=1 reached" in out
    assert len(out.splitlines()) == 1
    assert (run_dir / "summary_fit.json").read_bytes() == summary
    assert json.loads(summary)["metrics"].get("val/acc1") is not None  # the real final metrics stay
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no config_1.yaml, no new events


# ---------------------------------------------------------------------------- 5./6. bad files


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"truncated": tmp_path / "truncated.ckpt", "random": tmp_path / "random.ckpt"}
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["random"].write_bytes(os.urandom(4096))
    files["weights"] = tmp_path / "weights.pt"  # an official-layout weights file, not a Lightning checkpoint
    torch.save({"selector": {"backbone": {}, "head": {}}, "extractor": {}}, files["weights"])
    return files


@pytest.mark.parametrize("command", ["fit", "test"])
@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("truncated", [], "is truncated or corrupt"),
        ("random", [], "is not a checkpoint"),
        (
            "weights",
            [],
            "is not a Lightning checkpoint: it has no state_dict (official LookWhere weights go to module.model.pretrained)",
        ),
        # another image size: same keys, another pos_embed shape
        (
            "good",
            ["data.image_size=112", "module.model.img_size=[112,112]"],
            "does not fit the model: 'net.backbone.pos_embed' has shape [1, 16, 96] in the checkpoint, [1, 64, 96] in the model",
        ),
        ("good", ["module.model.arch=lookwhere"], "does not fit the model (key mismatch): 90 missing keys ['net.extractor."),
    ],
)
def test_bad_ckpt_path_is_one_line_and_leaves_no_run_folder(trained, tmp_path, capsys, command, case, extra, message):
    tmp, overrides = trained
    good = tmp / "runs" / "src" / "version_0" / "checkpoints" / "last.ckpt"
    path = good if case == "good" else _bad_files(tmp_path, good)[case]
    out_dir = tmp_path / "runs"
    code = main([command, "experiment=demo_vit", *overrides, *extra, f"output_dir={out_dir}", f"ckpt_path={path}"])
    err = _one_error_line(capsys)
    assert code == 2 and err.startswith(f"error: ckpt_path {path} ") and message in err, err
    assert not out_dir.exists()


def test_bad_pretrained_and_teacher_files_are_one_line(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    lw_common = [*tiny_overrides(tmp_path, "lookwhere"), "callbacks.images=null"]
    official = tmp_path / "lw.pt"  # 4 extractor blocks; the recipe below builds 2
    torch.save(export_official(LookWhere(model_config("tiny", img_size=[112, 112]))), official)
    files = _bad_files(tmp_path, official)
    narrow = tmp_path / "narrow_vit.pt"  # a timm state dict of another width
    torch.save(FullResViT(model_config("tiny", arch="vit", img_size=[112, 112], embed_dim=48)).backbone.state_dict(), narrow)
    cases = [
        (
            FINETUNE,
            lw_common,
            f"module.model.pretrained={files['truncated']}",
            f"model.pretrained {files['truncated']} is truncated or corrupt",
        ),
        (
            FINETUNE,
            lw_common,
            f"module.model.pretrained={files['random']}",
            f"model.pretrained {files['random']} is not a checkpoint",
        ),
        (
            FINETUNE,
            [*lw_common, "module.model.depth=2"],
            f"module.model.pretrained={official}",
            f"model.pretrained {official}: extractor does not fit the model (key mismatch): 24 unexpected keys ['blocks.2.",
        ),
        (
            FINETUNE,
            [*lw_common, "module.model.embed_dim=48", "module.model.num_heads=2"],
            f"module.model.pretrained={official}",
            f"model.pretrained {official}: selector.backbone does not fit the model: 'cls_token' has shape [1, 1, 96] in the checkpoint, [1, 1, 48] in the model",
        ),
        (
            DEMO,
            tiny_overrides(tmp_path),
            f"module.model.pretrained={narrow}",
            f"model.pretrained {narrow}: backbone does not fit the model: 'cls_token' has shape [1, 1, 48] in the checkpoint, [1, 1, 96] in the model",
        ),
        (
            DISTILL,
            lw_common,
            f"module.teacher.checkpoint={tmp_path / 'truncated.ckpt'}",
            f"teacher checkpoint {files['truncated']} is truncated or corrupt",
        ),
        (
            DISTILL,
            lw_common,
            f"module.teacher.checkpoint={files['random']}",
            f"teacher checkpoint {files['random']} is not a checkpoint",
        ),
    ]
    for recipe, common, override, message in cases:
        code = main(["fit", f"experiment={Path(recipe).stem}", *common, override])
        err = _one_error_line(capsys)
        assert code == 2 and message in err, (override, err)
        assert not out_dir.exists()


class RaiseAt(pl.Callback):
    """Raises a RuntimeError (not a user mistake) at the named hook: a crash while starting."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hook == "on_fit_start":
            raise RuntimeError("boom at fit start")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.hook == "on_train_batch_start":
            raise RuntimeError("boom at the first batch")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hook == "on_test_start":
            raise RuntimeError("boom at test start")


@pytest.mark.parametrize("hook", ["on_fit_start", "on_train_batch_start"])
def test_crash_before_the_first_step_leaves_no_run_folder(tmp_path, hook):
    overrides = [
        *_fast(tmp_path, "crash"),
        "callbacks.boom._target_=tests.test_checkpoints.RaiseAt",
        f"callbacks.boom.hook={hook}",
    ]
    with pytest.raises(RuntimeError, match="boom"):
        run(load_config(DEMO, overrides), "fit")
    assert not (tmp_path / "runs").exists()


def test_crash_of_an_evaluation_leaves_no_new_folder(trained, tmp_path):
    tmp, overrides = trained
    ckpt = tmp / "runs" / "src" / "version_0" / "checkpoints" / "last.ckpt"
    cfg = load_config(
        DEMO,
        [
            *overrides,
            f"output_dir={tmp_path / 'runs'}",
            f"ckpt_path={ckpt}",
            "callbacks.boom._target_=tests.test_checkpoints.RaiseAt",
            "callbacks.boom.hook=on_test_start",
        ],
    )
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, "test")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- 7. k


@pytest.mark.parametrize(
    "recipe, override, message",
    [
        (DEMO, "module.train_k=1.5", "module.train_k=1.5: k is a count 1..64 or a fraction in (0, 1] of the 64 patches"),
        (DEMO, "module.eval_k=0", "module.eval_k=0: k is a count"),
        (DEMO, "module.eval_k=65", "module.eval_k=65 is more than the 64 patches of the model"),
        (DEMO, "module.eval_ks=[5,0.5,100]", "module.eval_ks[2]=100 is more than the 64 patches"),
        (DEMO, "module.model.k=-0.1", "module.model.k=-0.1: k is a count"),
        (DISTILL, "module.k_max=1.5", "module.k_max=1.5: k is a count 1..64"),
        (DISTILL, "module.k_min=100", "module.k_min=100 is more than the 64 patches"),
        (DISTILL, "module.val_k=0.0", "module.val_k=0.0: k is a count"),
        (DISTILL, "module.k_min=40", "module.k_min=40 keeps more patches (40) than module.k_max=32 (32)"),
    ],
)
def test_bad_k_is_a_config_error_before_training(tmp_path, capsys, recipe, override, message):
    extra = [] if recipe == DEMO else [f"module.teacher.checkpoint={tmp_path / 'never_read.ckpt'}"]  # k fails first
    code = main(["fit", f"experiment={Path(recipe).stem}", *tiny_overrides(tmp_path, "lookwhere"), *extra, override])
    err = _one_error_line(capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- 8. no batches


def test_no_training_batch_is_an_error(tmp_path, capsys):
    code = main(["fit", "experiment=demo_vit", *_fast(tmp_path, "empty"), "data.num_train=3"])
    err = _one_error_line(capsys)
    assert code == 2
    assert "no training batches: 3 training samples give no full batch of 4 with drop_last" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- 9. pretrained


def test_evaluation_of_a_checkpoint_does_not_need_the_pretrained_file(trained, tmp_path, capsys):
    tmp, overrides = trained
    ckpt = tmp / "runs" / "src" / "version_0" / "checkpoints" / "last.ckpt"
    gone = tmp_path / "moved_away.pt"
    for command in ("validate", "predict"):
        code = main([command, "experiment=demo_vit", *overrides, f"module.model.pretrained={gone}", f"ckpt_path={ckpt}"])
        assert code == 0, capsys.readouterr().err
    assert (ckpt.parent.parent / "predictions.csv").is_file()
    # fit still needs it: the file is where its weights come from
    assert main(["fit", "experiment=demo_vit", *overrides, f"module.model.pretrained={gone}", "name=scratch"]) == 2
    assert "model.pretrained not found" in _one_error_line(capsys)


def test_finetuned_checkpoint_evaluates_after_its_pretrained_file_is_gone(tmp_path, capsys):
    """demo_finetune.yaml has ``pretrained: ???``: evaluating its checkpoint names no weights file."""
    # release-like: no recorded resize_mode (-> official), an r = 3 head where 112 px would default to 2
    pretrained = tmp_path / "lookwhere.pt"
    release = export_official(LookWhere(model_config("tiny", img_size=[112, 112], selector_img_size=56, selector_r=3)))
    del release["resize_mode"]
    torch.save(release, pretrained)
    common = [
        *tiny_overrides(tmp_path, "lookwhere"),
        "data.num_train=8",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "callbacks.images=null",
        "callbacks.flops=null",
    ]
    assert main(["fit", "experiment=demo_finetune", *common, f"module.model.pretrained={pretrained}"]) == 0
    last = tmp_path / "runs" / "demo_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["hyper_parameters"]["model"]
    assert (saved["selector_r"], saved["resize_mode"]) == (3, "official")  # what the file decided is recorded
    pretrained.unlink()
    capsys.readouterr()
    assert main(["predict", "experiment=demo_finetune", *common, "ckpt_path=last"]) == 0, capsys.readouterr().err
    rows = (tmp_path / "runs" / "demo_finetune" / "version_0" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 8  # header + the 8 predict samples
    # without a checkpoint the value stays mandatory
    assert main(["predict", "experiment=demo_finetune", *common]) == 2
    assert "missing mandatory value(s): module.model.pretrained" in _one_error_line(capsys)
