"""DDP on CPU (gloo, 2 processes): metrics equal to one process, LookWhere's k identical on all
ranks, per-device batches, rank-0-only files and summary; torchrun launch; every task under DDP.

Multi-process runs launch the real CLI as a subprocess (``trainer.strategy=ddp`` re-launches the
command for rank 1, as on a workstation), or ``torchrun`` for the cluster path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lw_lightning.config import load_config
from lw_lightning.tasks import run

from .conftest import ROOT, tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"
DDP2 = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _cli(args: list[str], launcher: list[str] | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable, "-m"]), "lw_lightning", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _eval_overrides(tmp_path: Path, task: str) -> list[str]:
    common = [
        *tiny_overrides(tmp_path, "lookwhere"),
        "data.num_val=7",
        "data.eval_batch_size=4",
        "module.eval_k=8",
        "callbacks.images=null",
        "callbacks.flops=null",
    ]  # pictures and FLOPs are tested elsewhere
    if task == "segmentation":
        return ["experiment=demo_seg", *common]
    return ["experiment=demo_vit", *common, "module.class_weights=[1.0,2.0,3.0,0.5]"]


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_eval_loss_does_not_depend_on_batching(tmp_path, task):
    """The property DDP parity rests on: epoch metrics independent of how samples are grouped."""
    args = _eval_overrides(tmp_path, task)
    recipe, overrides = args[0], args[1:]
    a = run(load_config(None, [recipe, *overrides, "data.eval_batch_size=1", "name=a"]), "validate").metrics
    b = run(load_config(None, [recipe, *overrides, "data.eval_batch_size=4", "name=b"]), "validate").metrics
    keys = [k for k in a if k.startswith("val/")]
    assert "val/loss" in keys
    for key in keys:
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


def test_ddp_validate_equals_single_process(tmp_path):
    """7 validation samples on 2 ranks (4 + 3, no padding): the same numbers as one process."""
    args = _eval_overrides(tmp_path, "classification")
    single = run(load_config(None, [*args, "name=single"]), "validate").metrics
    proc = _cli(["validate", *args, *DDP2, "name=ddp"])
    assert proc.stdout.count("validate done:") == 1  # rank 0 only
    summary = json.loads((tmp_path / "runs" / "ddp" / "version_0" / "summary_validate.json").read_text())
    assert summary["world_size"] == 2
    ddp = summary["metrics"]
    for key in ("val/acc1", "val/acc5"):
        assert ddp[key] == single[key], key
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)


def _distill_overrides(tmp_path: Path) -> list[str]:
    return [
        "experiment=demo_distill",
        *tiny_overrides(tmp_path, "lookwhere"),
        "module.teacher.checkpoint=null",
        "module.teacher.preset=tiny",
        "module.teacher.img_size=[112,112]",
        "module.init_from_teacher=false",
        "module.k_min=4",
        "module.k_max=32",
        "module.val_k=8",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "data.num_train=32",  # 2 steps per epoch at 16
        "data.batch_size=16",
        "trainer.log_every_n_steps=1",
        "callbacks.probe._target_=tests.scale_helpers.RankProbe",
        f"callbacks.probe.folder={tmp_path / 'ranks'}",
    ]


def test_ddp_distill_same_k_on_all_ranks_and_rank0_writes(tmp_path):
    proc = _cli(["fit", *_distill_overrides(tmp_path), *DDP2])
    assert proc.stdout.count("fit done:") == 1 and "val/map_recall=" in proc.stdout
    ranks = [json.loads((tmp_path / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["batch_sizes"] == [8] * 4 for r in ranks)  # global 16 / 2 devices, 4 steps
    for epoch in (0, 1):
        shard0, shard1 = (set(r["indices"][16 * epoch : 16 * (epoch + 1)]) for r in ranks)
        assert not shard0 & shard1 and len(shard0 | shard1) == 32  # disjoint shards covering the set
    assert ranks[0]["k"] == ranks[1]["k"] and len(set(ranks[0]["k"])) > 1  # k varies by step, not by rank
    assert all(len(set(g)) == 1 for g in ranks[0]["k_all_ranks"])  # gathered across processes
    # files written by rank 0 only, once
    run_dir = tmp_path / "runs" / "demo_distill"
    assert [d.name for d in run_dir.iterdir()] == ["version_0"]
    version = run_dir / "version_0"
    assert len(list(version.glob("config*.yaml"))) == 1
    assert (version / "lookwhere.pt").is_file() and (version / "summary_fit.json").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(version), size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("images/selection")) == 2  # one per epoch: not one per rank
    assert {"train/loss_cls", "train/loss_patch", "train/loss_map", "train/k", "val/map_recall"} <= set(acc.Tags()["scalars"])


@pytest.mark.slow
def test_torchrun_two_local_processes(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m"]
    args = [
        "fit",
        "experiment=demo_vit",
        *tiny_overrides(tmp_path),
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        *DDP2,
        "callbacks.probe._target_=tests.scale_helpers.RankProbe",
        f"callbacks.probe.folder={tmp_path / 'ranks'}",
    ]
    proc = _cli(args, launcher=launcher)
    assert proc.stdout.count("fit done:") == 1
    ranks = [json.loads((tmp_path / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [(r["global_rank"], r["env_rank"], r["world_size"]) for r in ranks] == [(0, "0", 2), (1, "1", 2)]
    assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
    assert [d.name for d in (tmp_path / "runs" / "demo_vit").iterdir()] == ["version_0"]


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> Path:
    from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics

    root = tmp_path_factory.mktemp("sk") / "synthetic_kinetics"
    make_synthetic_kinetics(root, SyntheticKineticsSpec(train_per_class=2, val_per_class=1, test_per_class=1, num_frames=16))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "segmentation", "video", "distill"])
def test_every_task_fits_and_tests_under_ddp(task, tmp_path, kinetics):
    if task == "distill":
        args = _distill_overrides(tmp_path)
    elif task == "video":
        args = [
            "experiment=demo_video",
            f"data.root={kinetics}",
            f"output_dir={tmp_path / 'runs'}",
            "data.batch_size=4",
            "data.eval_batch_size=2",
            "trainer.enable_progress_bar=false",
        ]
    else:
        args = _eval_overrides(tmp_path, task)
    args = [*args, "trainer.max_epochs=1"]
    ddp = DDP2
    if task == "segmentation":
        # demo_seg trains the selector (freeze_selector: false) without a gradient path to its map
        # head (no selector_gate): those parameters get no gradient, which plain DDP rejects
        ddp = [*DDP2, "trainer.strategy=ddp_find_unused_parameters_true"]
    proc = _cli(["fit", *args, *ddp, "name=ddpfit"])
    assert proc.stdout.count("fit done:") == 1
    if task == "distill":
        return
    ckpt = tmp_path / "runs" / "ddpfit" / "version_0" / "checkpoints" / "last.ckpt"
    proc = _cli(["validate", *args, *ddp, f"ckpt_path={ckpt}", "name=ddpval"])
    assert proc.stdout.count("validate done:") == 1
    metrics = json.loads((tmp_path / "runs" / "ddpval" / "version_0" / "summary_validate.json").read_text())["metrics"]
    single = run(load_config(None, [*args, f"ckpt_path={ckpt}", "name=single"]), "validate").metrics
    keys = [k for k in single if k.startswith("val/")]
    assert keys
    for key in keys:
        assert metrics[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key


def test_lightning_keeps_our_sharded_loaders_and_shards_foreign_ones():
    """``use_distributed_sampler`` at Lightning's default: our loaders (both samplers are
    ``DistributedSampler`` subclasses) pass through unchanged and keep their shards, while a
    plain loader from some other DataModule is still sharded by Lightning."""
    from pytorch_lightning import Trainer
    from pytorch_lightning.trainer.states import RunningStage
    from torch.utils.data import DataLoader, DistributedSampler

    from lw_lightning.data.synthetic_signs import SyntheticSignsDataModule

    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)  # not launched: rank 0 of 2
    assert trainer._accelerator_connector.use_distributed_sampler and trainer._accelerator_connector.is_distributed
    dm = SyntheticSignsDataModule(image_size=56, num_train=10, num_val=7, num_test=7, batch_size=4, eval_batch_size=2)
    dm.trainer = trainer
    dm.setup("fit")
    prepare = trainer._data_connector._prepare_dataloader
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert prepare(train, shuffle=True, mode=RunningStage.TRAINING) is train
    assert prepare(val, shuffle=False, mode=RunningStage.VALIDATING) is val
    train.sampler.set_epoch(1)
    assert len(list(train.sampler)) == 5 and list(val.sampler) == [0, 2, 4, 6]  # rank 0: no padding
    foreign = DataLoader(list(range(7)), batch_size=2)
    sharded = prepare(foreign, shuffle=False, mode=RunningStage.VALIDATING)
    assert sharded is not foreign and isinstance(sharded.sampler, DistributedSampler)


@pytest.mark.slow
def test_ddp_counts_missing_and_corrupt_videos_once(kinetics_root, tmp_path):
    """2 ranks: an annotated val clip without a file is counted once (every rank holds the split's
    count, 'max' keeps it), an unreadable one once (on the rank that reads it): as in one process."""
    import shutil

    from .test_kinetics import corrupt

    root = Path(shutil.copytree(kinetics_root, tmp_path / "kinetics"))
    clips = sorted((root / "val").iterdir())
    clips[0].unlink()
    corrupt(clips[1])
    args = [
        "experiment=demo_video",
        f"data.root={root}",
        f"output_dir={tmp_path / 'runs'}",
        "data.eval_batch_size=2",
        "callbacks.images=null",
        "callbacks.flops=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    single = run(load_config(None, [*args, "name=single"]), "validate").metrics
    _cli(["validate", *args, *DDP2, "name=ddp"])
    ddp = json.loads((tmp_path / "runs" / "ddp" / "version_0" / "summary_validate.json").read_text())["metrics"]
    for key in ("val/missing_videos", "val/corrupt_videos"):
        assert ddp[key] == single[key] == 1.0, key
