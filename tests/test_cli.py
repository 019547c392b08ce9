"""CLI / config tests: Hydra composition, overrides, interpolation, errors, --cfg job, legacy commands, runs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lw_lightning.cli import main
from lw_lightning.config import ConfigError, load_config
from lw_lightning.modules.classification import ImageClassifier
from lw_lightning.tasks import run

from .conftest import ROOT, tiny_overrides

DEMO = "demo_vit"


@pytest.fixture(autouse=True)
def _cwd(root, monkeypatch):
    monkeypatch.chdir(root)


def test_overrides_win_over_files():
    cfg = load_config(DEMO, ["trainer.max_epochs=7", "module.lr=0.5", "data.image_size=112"])
    assert cfg.trainer.max_epochs == 7
    assert cfg.module.lr == 0.5
    assert cfg.data.image_size == 112
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"  # from conf/trainer/default.yaml


def test_recipe_of_another_config_dir_interpolates_a_cli_override(tmp_path, capsys):
    """A recipe outside conf/ (``--config-dir DIR``, the recipe in DIR/experiment/) builds on ours,
    and interpolation runs once on the final tree, so it sees a command-line override."""
    (tmp_path / "experiment").mkdir()
    recipe = tmp_path / "experiment" / "mine.yaml"
    recipe.write_text(
        "# @package _global_\ndefaults: [demo_vit, _self_]\nname: mine\n"
        "module:\n  model:\n    img_size: ['${data.image_size}', '${data.image_size}']\n"
    )
    cfg = load_config(recipe, ["data.image_size=112"])
    assert list(cfg.module.model.img_size) == [112, 112] and cfg.name == "mine"
    assert main(["fit", "--config-dir", str(tmp_path), "experiment=mine", "data.image_size=96", "--cfg", "job", "--resolve"]) == 0
    assert OmegaConf.create(capsys.readouterr().out).module.model.img_size == [96, 96]


def test_launch_option_wins_over_the_recipe_and_overrides_win_over_both():
    cfg = load_config(DEMO, ["launch=ddp_gpu", "trainer.devices=2"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.precision, cfg.ckpt_path) == ("ddp", 2, "bf16-mixed", "last")
    assert cfg.callbacks.last_every_n_steps.every_n_train_steps == 1000
    assert cfg.trainer.max_epochs == 6  # the recipe's, kept


def test_slurm_launch_composes_with_submitit():
    """`launch=slurm` cannot be submitted here; its composed Hydra config names submitit's SLURM
    launcher with one task per GPU on every node."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    from lw_lightning.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "run",
            [
                "experiment=lookwhere_in1k_224_k128",
                "launch=slurm",
                "trainer.num_nodes=2",
                "trainer.devices=8",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node, launcher.partition) == (2, 8, 8, "gpu")
    assert (cfg.trainer.strategy, cfg.ckpt_path) == ("ddp", "last")
    assert load_config(DEMO, ["launch=slurm"]).trainer.accelerator == "gpu"


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
        ("module.model.dept=3", "unknown key 'module.model.dept' (did you mean 'module.model.depth'?)"),
        ("modul.lr=1", "unknown key 'modul' (did you mean 'module'?)"),
        ("module.lrr=1", "unknown key 'module.lrr' (did you mean 'module.lr'?)"),
        ("data.batch_size=abc", "wrong type for 'data.batch_size'"),
        ("module.model.depth=2.5", "wrong type for 'module.model.depth'"),
        ("trainer.precision=bf17", "wrong type for 'trainer.precision'"),
        ("trainer=5", "unknown trainer '5'"),
        ("experiment=demo_vt", "unknown experiment 'demo_vt' (did you mean 'demo_vit'?)"),
        ("callbacks.images=5", "'callbacks.images' must be a callback node"),
        ("module.lr=[1", "cannot parse override 'module.lr=[1'"),
        ("module.lr=1,2", "add -m (multirun)"),
    ],
)
def test_bad_keys_exit_2_with_one_line(tmp_path, capsys, override, message):
    out_dir = tmp_path / "runs"
    code = main(["fit", "experiment=demo_vit", override, f"output_dir={out_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_a_sweep_is_checked_job_by_job_before_the_first_runs(tmp_path, capsys):
    code = main(["fit", "-m", "experiment=demo_vit", "module.model.depth=2,2.5", f"output_dir={tmp_path / 'runs'}"])
    assert code == 2 and "wrong type for 'module.model.depth': expected int, got 2.5" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_unknown_key_is_reported_before_torch_is_imported(tmp_path):
    """The one-line error comes from the config layer alone: neither torch nor Lightning is
    imported (they cost seconds, much more on a loaded machine)."""
    probe = (
        "import sys, time; t = time.perf_counter(); from lw_lightning.cli import main; "
        "code = main(['fit', 'experiment=demo_vit', 'trainer.max_epoch=3']); "
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'timm') if m in sys.modules]; "
        "print(heavy, round(time.perf_counter() - t, 2)); sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip()
        == "error: unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?) for pytorch_lightning.Trainer"
    )
    assert proc.stdout.startswith("[] "), proc.stdout


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["fit", "--config", "conf/experiment/demo_vit.yaml", "trainer.max_epochs=2"],
            "run: python -m lw_lightning fit experiment=demo_vit trainer.max_epochs=2",
        ),
        (
            [
                "test",
                "--config",
                "conf/experiment/lookwhere_in1k_224_k128.yaml",
                "--config",
                "conf/launch/ddp_gpu.yaml",
                "ckpt_path=last",
            ],
            "run: python -m lw_lightning test experiment=lookwhere_in1k_224_k128 launch=ddp_gpu ckpt_path=last",
        ),
        (
            ["fit", "-c", "conf/experiment/demo_vit.yaml", "--print-config"],
            "run: python -m lw_lightning fit experiment=demo_vit --cfg job --resolve",
        ),
    ],
)
def test_pre_hydra_command_lines_say_what_to_type(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(expected) and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["bench"], "python -m benchmarks bench=NAME [key=value ...]"),
        (["bench", "bench=cpu", "output_dir=runs/bench/cpu"], "python -m benchmarks bench=cpu output_dir=runs/bench/cpu"),
        (["bench", "bench=gpu", "bench.suites=[images, video]"], "python -m benchmarks bench=gpu 'bench.suites=[images, video]'"),
        (["bench", "--config", "conf/bench/cpu.yaml", "output_dir=x"], "python -m benchmarks bench=cpu output_dir=x"),
        (["bench", "--help"], "python -m benchmarks --help"),
    ],
)
def test_bench_moved_out_of_the_package_says_what_to_type(capsys, argv, expected):
    """The benchmarks are the repository's (`python -m benchmarks`), not the package's: the old
    command is one line naming the new one, exit status 2, nothing run."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: 'bench' is not a command of lw_lightning any more") and err.strip().endswith(
        f"from the repository root run: {expected}"
    )


def test_unknown_command_and_missing_recipe(capsys, tmp_path):
    assert main(["fitt", "experiment=demo_vit"]) == 2
    assert "unknown command 'fitt' (did you mean 'fit'?)" in capsys.readouterr().err
    assert main(["fit", f"output_dir={tmp_path}"]) == 2
    assert "choose a recipe with experiment=<name>" in capsys.readouterr().err
    assert main(["fit", "experiment=demo_finetune", f"output_dir={tmp_path}"]) == 2
    assert "missing mandatory value(s): module.model.pretrained" in capsys.readouterr().err


def test_invalid_value_rejected_at_build_time(capsys, tmp_path):
    code = main(["fit", "experiment=demo_vit", "module.model.preset=tinny", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'tiny'" in err
    assert not (tmp_path / "runs").exists()


def test_cfg_job_prints_the_config_and_it_round_trips(capsys, tmp_path):
    assert main(["fit", "experiment=demo_vit", "trainer.max_epochs=2", "--cfg", "job", "--resolve"]) == 0
    printed = capsys.readouterr().out
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    assert OmegaConf.create(printed) == load_config(DEMO, ["trainer.max_epochs=2"])
    assert load_config(saved) == load_config(DEMO, ["trainer.max_epochs=2"])  # a saved config is a primary config


def test_fit_fast_dev_run_via_main(tmp_path, capsys):
    code = main(["fit", "experiment=demo_vit", *tiny_overrides(tmp_path, "lookwhere"), "trainer.fast_dev_run=true"])
    assert code == 0
    assert "fit done" in capsys.readouterr().out


def _short_fit(tmp_path, arch="lookwhere"):
    cfg = load_config(DEMO, [*tiny_overrides(tmp_path, arch), "trainer.max_epochs=1", "trainer.limit_val_batches=1"])
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
    common = ["experiment=demo_vit", *tiny_overrides(tmp_path, "lookwhere"), f"ckpt_path={ckpt}", "module.eval_k=5"]
    assert main(["test", *common]) == 0
    assert "test/acc1=" in capsys.readouterr().out
    assert main(["predict", *common, "name=pred"]) == 0
    files = list((tmp_path / "runs" / "pred").glob("version_*/predictions.csv"))
    assert len(files) == 1
    # the final line names the file it wrote
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"predict done: wrote {files[0]}  [run dir: ")
    rows = list(csv.DictReader(files[0].open()))
    assert [int(r["index"]) for r in rows] == list(range(8))
    assert [r["source"] for r in rows] == [f"predict/{i}" for i in range(8)]  # synthetic: split/index
    for r in rows:
        assert r["pred_name"] in ("EMPTY", "50_SIGN", "70_SIGN", "80_SIGN")
        assert 0.0 <= float(r["score"]) <= 1.0
        sel = [int(i) for i in r["selected"].split()]
        assert len(sel) == 5 and len(set(sel)) == 5 and all(0 <= i < 64 for i in sel)


def test_missing_checkpoint_is_a_config_error(tmp_path, capsys):
    code = main(["test", "experiment=demo_vit", *tiny_overrides(tmp_path), f"ckpt_path={tmp_path / 'none.ckpt'}"])
    assert code == 2 and "ckpt_path not found" in capsys.readouterr().err


def test_config_error_is_value_error_subclass():
    with pytest.raises(ConfigError):
        load_config(DEMO, ["nope=1"])


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


def test_a_group_set_to_null_is_left_out():
    """`logger=null` / `callbacks=null` (as the bench's accuracy suite passes them) drop the group."""
    cfg = load_config(DEMO, ["logger=null", "callbacks=null"])
    assert cfg.get("logger") is None and cfg.get("callbacks") is None
