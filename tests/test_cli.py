"""CLI / config tests: composition, overrides, interpolation, errors, print-config, runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lw_lightning.cli import main
from lw_lightning.config import ConfigError, load_config
from lw_lightning.modules.classification import ImageClassifier
from lw_lightning.tasks import run

from .conftest import tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"


@pytest.fixture(autouse=True)
def _cwd(root, monkeypatch):
    monkeypatch.chdir(root)


def test_overrides_win_over_files():
    cfg = load_config([DEMO], ["trainer.max_epochs=7", "module.lr=0.5", "data.image_size=112"])
    assert cfg.trainer.max_epochs == 7
    assert cfg.module.lr == 0.5
    assert cfg.data.image_size == 112
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"  # from the _base_ file


def test_interpolation_across_files_sees_cli_override(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(f"_base_: [{Path(DEMO).resolve()}]\ndata:\n  image_size: 224\n")
    b.write_text("module:\n  model:\n    img_size: ['${data.image_size}', '${data.image_size}']\n")
    cfg = load_config([a, b], ["data.image_size=112"])
    assert list(cfg.module.model.img_size) == [112, 112]


def test_later_config_file_wins(tmp_path):
    b = tmp_path / "b.yaml"
    b.write_text("trainer:\n  max_epochs: 3\nname: second\n")
    cfg = load_config([DEMO, b])
    assert (cfg.trainer.max_epochs, cfg.name) == (3, "second")


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
        ("module.model.dept=3", "unknown key 'module.model.dept' (did you mean 'module.model.depth'?)"),
        ("modul.lr=1", "unknown key 'modul' (did you mean 'module'?)"),
        ("data.batch_size=abc", "wrong type for 'data.batch_size'"),
        ("module.model.depth=2.5", "wrong type for 'module.model.depth'"),
        ("trainer=5", "'trainer' is a config node"),
    ],
)
def test_bad_keys_exit_2_with_one_line(tmp_path, capsys, override, message):
    out_dir = tmp_path / "runs"
    code = main(["fit", "--config", DEMO, override, f"output_dir={out_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_missing_config_file_exits_2(capsys, tmp_path):
    assert main(["fit", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_invalid_value_rejected_at_build_time(capsys, tmp_path):
    code = main(["fit", "--config", DEMO, "module.model.preset=tinny", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'tiny'" in err
    assert not (tmp_path / "runs").exists()


def test_print_config_round_trips(capsys, tmp_path):
    assert main(["fit", "--config", DEMO, "trainer.max_epochs=2", "--print-config"]) == 0
    printed = capsys.readouterr().out
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    assert OmegaConf.create(printed) == load_config([DEMO], ["trainer.max_epochs=2"])
    assert load_config([saved]) == load_config([DEMO], ["trainer.max_epochs=2"])


def test_fit_fast_dev_run_via_main(tmp_path, capsys):
    code = main(["fit", "--config", DEMO, *tiny_overrides(tmp_path, "lookwhere"), "trainer.fast_dev_run=true"])
    assert code == 0
    assert "fit done" in capsys.readouterr().out


def _short_fit(tmp_path, arch="lookwhere"):
    cfg = load_config([DEMO], [*tiny_overrides(tmp_path, arch), "trainer.max_epochs=1", "trainer.limit_val_batches=1"])
    return run(cfg, "fit")


def test_fit_saves_config_and_checkpoint_reloads_with_same_logits(tmp_path):
    result = _short_fit(tmp_path)
    log_dir = Path(result.log_dir)
    assert (log_dir / "config.yaml").is_file()
    assert OmegaConf.load(log_dir / "config.yaml").module.model.arch == "lookwhere"
    last = log_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    loaded = ImageClassifier.load_from_checkpoint(last, map_location="cpu").eval()  # no config needed
    module = result.module.eval()
    images = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0], module(images)[0])
    assert "val/acc1" in result.metrics and "train/loss" in result.metrics


def test_test_command_from_checkpoint_and_predict_csv(tmp_path, capsys):
    result = _short_fit(tmp_path)
    ckpt = Path(result.log_dir) / "checkpoints" / "last.ckpt"
    common = ["--config", DEMO, *tiny_overrides(tmp_path, "lookwhere"), f"ckpt_path={ckpt}", "module.eval_k=5"]
    assert main(["test", *common]) == 0
    assert "test/acc1=" in capsys.readouterr().out
    assert main(["predict", *common, "name=pred"]) == 0
    files = list((tmp_path / "runs" / "pred").glob("version_*/predictions.csv"))
    assert len(files) == 1
    rows = list(csv.DictReader(files[0].open()))
    assert [int(r["index"]) for r in rows] == list(range(8))
    assert [r["source"] for r in rows] == [f"predict/{i}" for i in range(8)]  # synthetic: split/index
    for r in rows:
        assert r["pred_name"] in ("EMPTY", "50_SIGN", "70_SIGN", "80_SIGN")
        assert 0.0 <= float(r["score"]) <= 1.0
        sel = [int(i) for i in r["selected"].split()]
        assert len(sel) == 5 and len(set(sel)) == 5 and all(0 <= i < 64 for i in sel)


def test_missing_checkpoint_is_a_config_error(tmp_path, capsys):
    code = main(["test", "--config", DEMO, *tiny_overrides(tmp_path), f"ckpt_path={tmp_path / 'none.ckpt'}"])
    assert code == 2 and "ckpt_path not found" in capsys.readouterr().err


def test_config_error_is_value_error_subclass():
    with pytest.raises(ConfigError):
        load_config([DEMO], ["nope=1"])


def test_worker_wrapped_config_error_prints_its_own_line():
    # torch re-raises a worker's error as the same type carrying the worker's whole traceback
    from torch._utils import ExceptionWrapper

    from lw_lightning.cli import one_line

    try:
        try:
            raise OSError("disk said no")
        except OSError as cause:
            raise ConfigError("data/x.png: size (1, 2) differs from its image (3, 4)") from cause
    except ConfigError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 3")
    with pytest.raises(ConfigError) as caught:
        wrapper.reraise()
    assert str(caught.value).startswith("Caught ConfigError in DataLoader worker process 3.")
    assert one_line(caught.value) == "data/x.png: size (1, 2) differs from its image (3, 4)"
    assert one_line(ConfigError("plain\nsecond line")) == "plain"
