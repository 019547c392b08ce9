"""Fault tolerance: exact mid-epoch resume after SIGKILL, ``ckpt_path=last``, the resumable loader,
and non-finite losses (stop naming the step / skip with a counter, never a NaN best checkpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from lw_lightning.cli import main
from lw_lightning.config import ConfigError, load_config
from lw_lightning.data.resumable import EpochShardSampler, ResumableDataLoader
from lw_lightning.tasks import find_last_checkpoint, run

from .conftest import ROOT, tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


# ---------------------------------------------------------------------------- the loader


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_sampler_matches_distributed_sampler(world):
    for rank in range(world):
        ours = EpochShardSampler(23, world, rank, seed=5)
        ref = DistributedSampler(list(range(23)), world, rank, shuffle=True, seed=5, drop_last=True)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_repeated_augmentation_deals_copies_to_different_ranks():
    """DeiT's RASampler order: each image 3 times in a row, dealt round-robin, epoch length kept."""
    n, world, reps = 24, 3, 3
    shards = [EpochShardSampler(n, world, rank, seed=5, repeats=reps) for rank in range(world)]
    for s in shards:
        s.set_epoch(1)
    orders = [list(s) for s in shards]
    assert all(len(o) == len(s) == n // world for o, s in zip(orders, shards))
    # with world == repeats every rank sees the same images, in the same order (each augments its own)
    assert orders[0] == orders[1] == orders[2]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5 + 1)).tolist()
    assert orders[0] == perm[: n // reps]  # 1/reps of the dataset per epoch, in the seeded order
    single = EpochShardSampler(n, 1, 0, seed=5, repeats=reps)
    single.set_epoch(1)
    assert list(single) == [i for i in perm[: n // reps] for _ in range(reps)]
    with pytest.raises(ValueError, match="repeats"):
        EpochShardSampler(n, 1, 0, repeats=0)


def test_repeated_augmentation_reaches_the_imagenet_loader(tmp_path):
    from lw_lightning.config import ConfigError
    from lw_lightning.data.imagenet import ImageNetDataModule, make_tiny

    root = make_tiny(tmp_path / "in", per_class=4, val_per_class=1)
    dm = ImageNetDataModule(
        str(root), image_size=28, auto_augment=None, re_prob=0.0, repeated_aug=2, batch_size=4, num_workers=0, pin_memory=False
    )
    dm.setup("fit")
    order = torch.cat([b["index"] for b in dm.train_dataloader()])
    assert torch.equal(order[0::2], order[1::2])  # each image twice in a row
    with pytest.raises(ConfigError, match="repeated_aug"):
        ImageNetDataModule(str(root), repeated_aug=0)


def _loader(seed: int = 1) -> ResumableDataLoader:
    return ResumableDataLoader(
        list(range(23)), batch_size=4, sampler=EpochShardSampler(23, 1, 0, seed=seed), drop_last=True, seed=seed
    )


def test_loader_state_resumes_rest_of_epoch_and_rng():
    loader = _loader()
    loader.sampler.set_epoch(2)
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(2)]
    state = loader.state_dict()
    expected_draw = torch.rand(3)  # what the uninterrupted run draws next
    rest = [b.tolist() for b in it]
    assert len(seen) + len(rest) == len(loader) == 5

    torch.manual_seed(123)  # a fresh process: different RNG
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    it2 = iter(resumed)
    first = next(it2).tolist()
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored before the first resumed batch
    assert [first, *[b.tolist() for b in it2]] == rest
    # the next epoch is whole again, and differs from epoch 2
    resumed.sampler.set_epoch(3)
    epoch3 = [b.tolist() for b in resumed]
    assert len(epoch3) == 5 and epoch3 != seen + rest


def test_loader_state_from_epoch_end_skips_nothing_in_next_epoch():
    loader = _loader()
    loader.sampler.set_epoch(0)
    list(loader)
    state = loader.state_dict()
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert len(list(resumed)) == 5


# ---------------------------------------------------------------------------- kill and resume


def _resume_overrides(tmp_path: Path, name: str) -> list[str]:
    return [
        *tiny_overrides(tmp_path),
        "data.num_train=12",
        "data.batch_size=4",  # 3 steps per epoch
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "trainer.deterministic=true",
        "module.model.drop_path_rate=0.2",  # training draws random numbers: the RNG must resume too
        "callbacks.last_every_n_steps.every_n_train_steps=2",
        "callbacks.images=null",
        "callbacks.probe._target_=tests.scale_helpers.RankProbe",
        f"callbacks.probe.folder={tmp_path / ('probe_' + name)}",
        f"name={name}",
    ]


def test_killed_run_resumes_mid_epoch_to_the_same_weights(tmp_path):
    reference = run(load_config(DEMO, _resume_overrides(tmp_path, "ref")), "fit")

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lw_lightning",
            "fit",
            "experiment=demo_vit",
            *_resume_overrides(tmp_path, "res"),
            "callbacks.kill._target_=tests.scale_helpers.KillAtStep",
            "callbacks.kill.step=5",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing ran after step 5
    assert "fit done" not in killed.stdout

    last, version = find_last_checkpoint(load_config(DEMO, _resume_overrides(tmp_path, "res")))
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert version == "version_0"
    # last.ckpt: steps 2 (mid-epoch), 3 (epoch end), 4 (mid-epoch 1); step 5 was lost with the process
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1

    resumed = run(load_config(DEMO, [*_resume_overrides(tmp_path, "res"), "ckpt_path=last"]), "fit")
    assert resumed.trainer.global_step == reference.trainer.global_step == 6
    assert resumed.log_dir == str(tmp_path / "runs" / "res" / "version_0")  # same run dir
    ref_state, res_state = reference.module.state_dict(), resumed.module.state_dict()
    assert ref_state.keys() == res_state.keys()
    for key in ref_state:
        torch.testing.assert_close(res_state[key], ref_state[key], rtol=0, atol=0, msg=key)
    lr = lambda r: r.trainer.optimizers[0].param_groups[0]["lr"]  # noqa: E731
    assert lr(resumed) == lr(reference)
    # data order: the resumed run trained on exactly the samples the reference saw after step 4
    ref_idx = json.loads((tmp_path / "probe_ref" / "rank_0.json").read_text())["indices"]
    res_idx = json.loads((tmp_path / "probe_res" / "rank_0.json").read_text())["indices"]
    assert res_idx == ref_idx[4 * 4 :]


def test_ckpt_path_last_errors_and_fresh_start(tmp_path, capsys):
    common = ["experiment=demo_vit", *tiny_overrides(tmp_path), "name=none"]
    assert main(["test", *common, "ckpt_path=last"]) == 2
    err = capsys.readouterr().err
    assert "ckpt_path=last: no last.ckpt found" in err and len(err.strip().splitlines()) == 1
    # fit with nothing to resume starts from scratch (a job script that is requeued uses one command)
    assert main(["fit", *common, "ckpt_path=last", "trainer.max_steps=1", "trainer.limit_val_batches=1"]) == 0
    assert find_last_checkpoint(load_config(DEMO, [*tiny_overrides(tmp_path), "name=none"]))[1] == "version_0"
    with pytest.raises(ConfigError, match="ckpt_path not found"):
        run(load_config(DEMO, [*tiny_overrides(tmp_path), f"ckpt_path={tmp_path / 'x.ckpt'}"]), "fit")


# ---------------------------------------------------------------------------- non-finite loss


def _nan_overrides(tmp_path: Path, action: str, steps: str) -> list[str]:
    return [
        *tiny_overrides(tmp_path),
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",  # 2 steps per epoch
        "callbacks.images=null",
        "callbacks.checkpoint.monitor=val/loss",
        "callbacks.checkpoint.mode=min",
        f"callbacks.nonfinite.action={action}",
        "callbacks.poison._target_=tests.scale_helpers.NaNAtSteps",
        f"callbacks.poison.steps={steps}",
    ]


def test_nonfinite_loss_stops_naming_the_step(tmp_path, capsys):
    code = main(["fit", "experiment=demo_vit", *_nan_overrides(tmp_path, "stop", "[3]")])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err.splitlines()[-1].startswith("error: non-finite training loss (nan) at global step 3 (epoch 1, batch 1)")
    assert len(err.splitlines()) == 1
    ckpts = sorted((tmp_path / "runs" / "demo_vit").glob("version_0/checkpoints/*.ckpt"))
    assert ckpts, "the epoch-0 checkpoints were written before the failure"
    for path in ckpts:  # nothing saved holds a NaN
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path


def test_nonfinite_loss_skip_counts_and_keeps_weights_finite(tmp_path):
    result = run(load_config(DEMO, _nan_overrides(tmp_path, "skip", "[1,2]")), "fit")
    assert result.trainer.global_step == 4  # skipped steps still count
    assert result.metrics["train/nonfinite_skipped"] == 2.0
    assert all(torch.isfinite(p).all() for p in result.module.parameters())
    best = result.trainer.checkpoint_callback.best_model_path
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_skipped_step_leaves_weights_and_optimizer_state_untouched(tmp_path):
    from lw_lightning.callbacks.nonfinite import NonFiniteLoss

    cb = NonFiniteLoss(action="skip")
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.full((3,), float("nan"))
    cb._skip_this_step = True
    cb.on_before_optimizer_step(None, None, opt)  # type: ignore[arg-type]
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3)) and not opt.state
    with pytest.raises(ValueError, match="'stop' or 'skip'"):
        NonFiniteLoss(action="ignore")  # type: ignore[arg-type]
