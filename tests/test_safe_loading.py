"""No file the project reads can run code (issue 30).

Every place that reads a checkpoint or weights file is fed a file whose unpickling would create a
marker file (``os.system("touch ...")``, the usual proof of concept). Each must refuse it with the
one line ``<what> <path> holds objects that could run code when loaded (posix.system); ...``, exit 2
from the CLI, and leave no marker. Checkpoints of earlier versions, whose hyper-parameters held
config dataclasses, still load. And no ``weights_only=False`` is left in the source tree.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lw_lightning.cli import main
from lw_lightning.errors import ConfigError
from lw_lightning.models.config import model_config

from .conftest import ROOT, tiny_overrides

REFUSED = "posix.system" if os.name == "posix" else "nt.system"


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def message(what: str, path: Path | str) -> str:
    return f"{what} {path} holds objects that could run code when loaded ({REFUSED}); only weights and plain values are read"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Callable[[str], Path]:
    """``evil(name)``: a torch.save file in the layout its reader expects (a Lightning checkpoint
    for ``.ckpt``, a state dict otherwise), with the payload in it."""

    def make(name: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".ckpt":
            content = {"state_dict": {"net.w": torch.zeros(2)}, "hyper_parameters": {"model": Payload(marker)}}
        else:
            content = {"pos_embed": torch.zeros(1, 4, 8), "extra": Payload(marker)}
        torch.save(content, path)
        return path

    return make


@pytest.fixture(autouse=True)
def _no_marker_after(marker: Path):
    yield
    assert not marker.exists(), "the file's payload ran"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_payload_runs_when_unpickled(marker: Path) -> None:
    """The fixture is a real exploit: plain unpickling creates the marker (so the tests below can fail)."""
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()


# --- the CLI: the reproductions, and ckpt_path for every command -------------------------


def test_teacher_checkpoint_is_refused(tmp_path, evil, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    bad = evil("teacher.ckpt")
    args = ["fit", "experiment=demo_distill", f"module.teacher.checkpoint={bad}", "trainer.fast_dev_run=true"]
    assert main([*args, *tiny_overrides(tmp_path, "lookwhere")]) == 2
    assert _one_error_line(capsys) == f"error: {message('teacher checkpoint', bad)}"


@pytest.mark.parametrize("recipe", ["demo_tokenlearner", "demo_vit"])
def test_pretrained_ckpt_is_refused(tmp_path, evil, capsys, monkeypatch, recipe) -> None:
    monkeypatch.chdir(ROOT)
    bad = evil("vit.ckpt")
    arch = "tokenlearner" if recipe == "demo_tokenlearner" else "vit"
    args = ["fit", f"experiment={recipe}", f"module.model.pretrained={bad}", "trainer.fast_dev_run=true"]
    assert main([*args, *tiny_overrides(tmp_path, arch)]) == 2
    assert _one_error_line(capsys) == f"error: {message('model.pretrained', bad)}"


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_ckpt_path_is_refused(tmp_path, evil, capsys, monkeypatch, command) -> None:
    monkeypatch.chdir(ROOT)
    bad = evil("run.ckpt")
    assert main([command, "experiment=demo_vit", f"ckpt_path={bad}", *tiny_overrides(tmp_path)]) == 2
    err = _one_error_line(capsys)
    assert err == f"error: {message('ckpt_path', bad)}"
    assert "truncated or corrupt" not in err
    assert not (tmp_path / "runs").exists()  # refused before anything was built or written


def test_ckpt_path_best_reads_last_safely(tmp_path, evil, capsys, monkeypatch) -> None:
    """``ckpt_path=best`` reads the run's last.ckpt for the best path: refused the same way."""
    monkeypatch.chdir(ROOT)
    last = evil("runs/demo_vit/version_0/checkpoints/last.ckpt")
    assert main(["test", "experiment=demo_vit", "ckpt_path=best", *tiny_overrides(tmp_path)]) == 2
    assert _one_error_line(capsys) == f"error: {message('ckpt_path=best: checkpoint', last)}"


# --- every reader of weights, called as the recipes and scripts call it --------------------------


def _tiny(arch: str, **kw):
    return model_config("tiny", arch=arch, **{"img_size": [56, 56], "selector_img_size": 28, **kw})


def _teacher(path: Path) -> None:
    from lw_lightning.models.teacher import TeacherConfig, build_teacher

    build_teacher(TeacherConfig(name=None, checkpoint=str(path)))


def _teacher_timm(path: Path) -> None:  # module.teacher.name + a local weights file
    from lw_lightning.models.teacher import TeacherConfig, build_teacher

    build_teacher(TeacherConfig(name="vit_small_patch14_dinov2", checkpoint=str(path), img_size=[56, 56]))


def _pretrained(arch: str, name: str | None = None) -> Callable[[Path], None]:
    def load(path: Path) -> None:
        from lw_lightning.models.checkpoint import load_pretrained
        from lw_lightning.models.lookwhere import build_model

        load_pretrained(build_model(_tiny(arch)), path, name=name)

    return load


def _lookwhere_config(path: Path) -> None:  # the file decides selector_r and resize_mode
    from lw_lightning.models.checkpoint import resolve_pretrained_config

    resolve_pretrained_config(_tiny("lookwhere", pretrained=str(path)))


def _load_official(path: Path) -> None:  # the Python API of the README
    from lw_lightning.models.checkpoint import load_official
    from lw_lightning.models.lookwhere import LookWhere

    load_official(LookWhere(_tiny("lookwhere")), path)


def _vivit_from_classifier(path: Path) -> None:  # TokenLearner inserted into a trained ViViT
    from lw_lightning.models.video_checkpoint import build_vivit

    build_vivit({"preset": "tiny", "num_tokens": 4, "pretrained": str(path)}, num_classes=3)


def _vivit_image_weights(path: Path) -> None:  # ViViT initialised from an image ViT file
    from lw_lightning.models.vivit import read_state_dict

    read_state_dict(str(path))


def _hf_vivit(path: Path) -> None:  # an HF snapshot folder with pytorch_model.bin
    from lw_lightning.models.hf_vivit import read_hf_weights

    read_hf_weights(path.parent)


def _video_lookwhere(path: Path) -> None:
    from lw_lightning.models.video_lookwhere import load_video_lookwhere

    load_video_lookwhere(None, path)  # type: ignore[arg-type]  # refused before the model is used


def _video_teacher(path: Path) -> None:
    from lw_lightning.models.video_teacher import VideoTeacherConfig, build_video_teacher

    build_video_teacher(VideoTeacherConfig(checkpoint=str(path)))


def _compare_reader(path: Path) -> None:  # benchmarks/compare.py and the notebooks' loader
    from benchmarks.compare import load_classifier

    load_classifier(str(path))


READERS = {
    "teacher .ckpt": (_teacher, "teacher.ckpt", "teacher checkpoint"),
    "teacher timm file": (_teacher_timm, "dinov2.pth", "teacher checkpoint"),
    "vit .ckpt": (_pretrained("vit"), "vit.ckpt", "model.pretrained"),
    "vit state dict": (_pretrained("vit"), "vit.pt", "model.pretrained"),
    "vit timm file": (_pretrained("vit", "vit_small_patch14_dinov2"), "vit.pth", "model.pretrained"),
    "tokenlearner .ckpt": (_pretrained("tokenlearner"), "vit.ckpt", "model.pretrained"),
    "tokenlearner state dict": (_pretrained("tokenlearner"), "vit.pt", "model.pretrained"),
    "lookwhere": (_pretrained("lookwhere"), "lookwhere.pt", "model.pretrained"),
    "lookwhere config": (_lookwhere_config, "lookwhere.pt", "model.pretrained"),
    "load_official": (_load_official, "lookwhere.pt", "LookWhere weights"),
    "vivit .ckpt": (_vivit_from_classifier, "vivit.ckpt", "model.pretrained"),
    "vivit image weights": (_vivit_image_weights, "vit_b16.pth", "pretrained weights file"),
    "hf vivit": (_hf_vivit, "snapshot/pytorch_model.bin", "model.pretrained"),
    "video lookwhere": (_video_lookwhere, "video_lookwhere.pt", "model.pretrained (video LookWhere weights)"),
    "video teacher": (_video_teacher, "vivit.ckpt", "teacher checkpoint"),
    "compare reader": (_compare_reader, "finetune.ckpt", "checkpoint"),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_refuses(evil, reader: str) -> None:
    load, name, what = READERS[reader]
    bad = evil(name)
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert str(info.value) == message(what, bad)


def _module_classes() -> list[type]:
    from lw_lightning.modules.classification import ImageClassifier
    from lw_lightning.modules.distill import LookWhereDistill
    from lw_lightning.modules.segmentation import Segmenter
    from lw_lightning.modules.video import VideoClassifier
    from lw_lightning.modules.video_dense import DenseVideoClassifier
    from lw_lightning.modules.video_distill import VideoLookWhereDistill
    from lw_lightning.modules.video_lookwhere import VideoLookWhereClassifier

    return [
        ImageClassifier,
        LookWhereDistill,
        Segmenter,
        VideoClassifier,
        DenseVideoClassifier,
        VideoLookWhereDistill,
        VideoLookWhereClassifier,
    ]


@pytest.mark.parametrize("cls", _module_classes(), ids=lambda c: c.__name__)
def test_load_from_checkpoint_refuses(evil, cls) -> None:
    """``Module.load_from_checkpoint(path)`` as the docs show it (the demo's reader among them)."""
    bad = evil("model.ckpt")
    with pytest.raises(ConfigError) as info:
        cls.load_from_checkpoint(bad, map_location="cpu")
    assert str(info.value) == message("checkpoint", bad)


def test_load_from_checkpoint_takes_weights_only_true_only(evil) -> None:
    from lw_lightning.modules.classification import ImageClassifier

    with pytest.raises(ValueError, match="weights_only=True only"):
        ImageClassifier.load_from_checkpoint(evil("model.ckpt"), weights_only=None)  # type: ignore[arg-type]


# --- checkpoints of earlier versions --------------------------------------------------------------


def _logits(module, x):
    out = module.eval()(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.fixture(scope="module")
def legacy_ckpt(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A checkpoint as earlier versions wrote it for a module built from Python with a config
    dataclass: Lightning pickled the ``ModelConfig`` itself into ``hyper_parameters``. Returns
    the file and the model's logits on a fixed input."""
    from lw_lightning.data.synthetic_signs import SyntheticSignsDataModule
    from lw_lightning.modules.classification import ImageClassifier
    from lw_lightning.modules.safe_checkpoint import SafeCheckpointModule

    base = tmp_path_factory.mktemp("legacy")
    pl.seed_everything(0, verbose=False)
    module = ImageClassifier(_tiny("vit", img_size=[112, 112]), num_classes=4)
    assert type(module.hparams["model"]).__name__ == "ModelConfig"
    data = SyntheticSignsDataModule(image_size=112, num_train=8, num_val=4, num_test=4, batch_size=4, num_workers=0)
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(module, datamodule=data)
    path = base / "legacy.ckpt"
    # the earlier code path: Lightning's own on_save_checkpoint (no conversion to plain values)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SafeCheckpointModule, "on_save_checkpoint", pl.LightningModule.on_save_checkpoint)
        trainer.save_checkpoint(path)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return path, _logits(module, x)


def test_legacy_checkpoint_holds_the_dataclass(legacy_ckpt) -> None:
    path, _ = legacy_ckpt
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL lw_lightning.models.config.ModelConfig"):
        torch.load(path, weights_only=True)  # torch alone refuses it: this is the old format


def test_legacy_checkpoint_loads(legacy_ckpt, tmp_path) -> None:
    from lw_lightning.models.checkpoint import read_weights
    from lw_lightning.models.teacher import TeacherConfig, build_teacher
    from lw_lightning.modules.classification import ImageClassifier

    path, logits = legacy_ckpt
    saved = read_weights(path, "ckpt_path")["hyper_parameters"]["model"]
    assert isinstance(saved, dict) and saved["arch"] == "vit" and saved["img_size"] == [112, 112]
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    module = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    with torch.no_grad():
        torch.testing.assert_close(_logits(module, x), logits)
    teacher = build_teacher(TeacherConfig(name=None, checkpoint=str(path)))  # and as a teacher
    torch.testing.assert_close(teacher.vit.pos_embed, module.net.backbone.pos_embed)
    # saved again, it holds plain values: torch reads it unaided
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "again.ckpt")
    again = torch.load(tmp_path / "again.ckpt", weights_only=True)["hyper_parameters"]["model"]
    assert again == saved


def test_legacy_checkpoint_through_the_cli(legacy_ckpt, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    path, _ = legacy_ckpt
    args = ["test", "experiment=demo_vit", f"ckpt_path={path}", *tiny_overrides(tmp_path), "callbacks.images=null"]
    assert main(args) == 0, capsys.readouterr().err
    assert "test done: " in capsys.readouterr().out


# --- the source tree ------------------------------------------------------------------------------

UNSAFE = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(|import dill|yaml\.(unsafe_)?load\(")


def test_no_unsafe_load_in_the_source_tree() -> None:
    """No ``weights_only=False`` (nor other unpickling of files) in the package, the benchmarks,
    the notebooks or the tests (this file aside: its payload test unpickles on purpose)."""
    files = [p for d in ("lw_lightning", "benchmarks", "notebooks", "tests") for p in (ROOT / d).rglob("*.py")]
    files += list((ROOT / "notebooks").glob("*.ipynb"))
    assert len(files) > 50
    found = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in files
        if p.name != Path(__file__).name
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if UNSAFE.search(line)
    ]
    assert not found, found
