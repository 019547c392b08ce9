"""Video LookWhere training: distillation and fine-tuning through the CLI on tiny synthetic motion,
checkpoint reload, k per step, teachers (video / per-frame image), pictures, the dense teacher,
TokenLearner from a ViViT checkpoint, the synthetic data, bad configurations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lw_lightning.cli import main
from lw_lightning.config import ConfigError, load_config
from lw_lightning.data.synthetic_motion import (
    CLASS_NAMES,
    DIRECTIONS,
    SyntheticMotion,
    render_motion_clip,
    track_recall,
    track_tubelets,
)
from lw_lightning.models.teacher import Teacher
from lw_lightning.models.video_checkpoint import build_vivit
from lw_lightning.models.video_teacher import FrameTeacher, FrameTeacherConfig
from lw_lightning.models.vit import create_vit
from lw_lightning.modules.video_distill import VideoLookWhereDistill
from lw_lightning.modules.video_lookwhere import VideoLookWhereClassifier
from lw_lightning.tasks import run

ROOT = Path(__file__).resolve().parents[1]
EXP = "conf/experiment"
# 8 frames of 32^2 with 2x8x8 tubelets: 4x4x4 = 64 tubelets; selector 4 frames of 16^2
SMALL_DATA = [
    "data.num_frames=8",
    "data.img_size=32",
    "data.num_train=8",
    "data.num_val=4",
    "data.num_test=4",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "data.cache=false",
]
SMALL_MODEL = ["module.model.num_frames=8", "module.model.img_size=32"]
SMALL_LW = [*SMALL_MODEL, "module.model.selector_num_frames=4", "module.model.selector_img_size=16"]
QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
]
TEACHER_MODEL = "module.teacher.model={preset: tiny, num_frames: 8, img_size: 32, tubelet: [2, 8, 8]}"


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def distill_args(tmp_path: Path) -> list[str]:
    return [
        "experiment=demo_vlw_distill",
        f"output_dir={tmp_path / 'runs'}",
        *SMALL_DATA,
        *SMALL_LW,
        *QUIET,
        "module.teacher.checkpoint=null",
        TEACHER_MODEL,
    ]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    """A tiny distillation run (random tiny ViViT teacher): its exported video_lookwhere.pt."""
    tmp = tmp_path_factory.mktemp("vlw")
    import os

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        args = distill_args(tmp)
        result = run(load_config(None, args), "fit")
    finally:
        os.chdir(old)
    assert {"val/loss", "val/map_recall", "val/object_recall", "val/loss_cls", "val/loss_patch", "val/loss_map"} <= set(
        result.metrics
    )
    export = Path(result.log_dir) / "video_lookwhere.pt"
    assert export.is_file()
    return export


def test_distill_logs_losses_k_and_pictures(distilled):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(distilled.parent), size_guidance={"images": 0})
    acc.Reload()
    assert {"train/loss_cls", "train/loss_patch", "train/loss_map", "train/k", "val/object_recall"} <= set(acc.Tags()["scalars"])
    assert "images/video_selection" in acc.Tags()["images"]
    ks = [e.value for e in acc.Scalars("train/k")]
    assert all(1 <= k <= 6 for k in ks)  # 2.5%..10% of 64 tubelets: 2..6
    gflops = acc.Scalars("perf/gflops_per_sample")
    assert gflops and gflops[0].value > 0


def test_k_per_step_depends_only_on_seed_and_step():
    a = VideoLookWhereDistill(_small_model(), teacher={"model": _small_teacher()}, init_from_teacher=False, k_min=2, k_max=40)
    b = VideoLookWhereDistill(_small_model(), teacher={"model": _small_teacher()}, init_from_teacher=False, k_min=2, k_max=40)
    seq = [a.sample_k(s) for s in range(50)]
    assert seq == [b.sample_k(s) for s in range(50)]  # a resumed run or another rank: the same k at each step
    assert len(set(seq)) > 10 and min(seq) >= 2 and max(seq) <= 40


def _small_model(**kw) -> dict:
    return dict(preset="tiny", num_frames=8, img_size=32, tubelet=[2, 8, 8], selector_num_frames=4, selector_img_size=16, **kw)


def _small_teacher() -> dict:
    return dict(preset="tiny", num_frames=8, img_size=32, tubelet=[2, 8, 8])


def test_distill_step_trains_the_student_only():
    module = VideoLookWhereDistill(_small_model(), teacher={"model": _small_teacher()})
    video = torch.randn(2, 3, 8, 32, 32)
    parts, extra = module.losses(video, 6)
    parts["total"].backward()
    sel, ext = module.student.selector, module.student.extractor
    assert sel.head.w2.weight.grad is not None and sel.cls_token.grad is not None  # map loss and the prefix path
    assert ext.vivit.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in module._teachers["video"].parameters())
    assert extra["keep"].shape == (2, 6)
    # init from the teacher: the extractor starts as the teacher
    torch.testing.assert_close(
        ext.vivit.encoder.blocks[1].mlp.fc1.weight, module._teachers["video"].vivit.encoder.blocks[1].mlp.fc1.weight
    )


def test_image_teacher_frame_by_frame():
    """The per-frame teacher runs on each slice's central frame resized to the tubelet grid."""
    vit = create_vit(img_size=(56, 56), patch_size=14, embed_dim=32, depth=2, num_heads=2)
    teacher = FrameTeacher(Teacher(vit), FrameTeacherConfig(name=None, preset=None))
    video = torch.randn(2, 3, 8, 32, 32)
    out = teacher(video, (4, 4, 4), 2)
    assert out["cls"].shape == (2, 32) and out["patch"].shape == (2, 64, 32) and out["attn"].shape == (2, 64)
    frame = video[:, :, 3]  # slice 1's central frame (t = 2, 3)
    x = torch.nn.functional.interpolate(frame, size=(56, 56), mode="bilinear", align_corners=False, antialias=True)
    x = x * teacher.scale + teacher.shift
    ref = Teacher(vit)(x)
    torch.testing.assert_close(out["patch"][:, 16:32], ref["patch"])
    torch.testing.assert_close(out["attn"][:, 16:32], ref["attn"])
    # as the "where" source of a distillation (student width 64 from the video teacher)
    module = VideoLookWhereDistill(
        _small_model(),
        teacher={"model": _small_teacher()},
        where="image",
        image_teacher={"name": None, "preset": "tiny", "img_size": [56, 56]},
    )
    parts, _ = module.losses(video, 6)
    assert torch.isfinite(parts["map"])


def test_finetune_from_export_then_checkpoint_reload_gives_the_same_logits(distilled, tmp_path, capsys):
    args = [
        "experiment=demo_vlw_finetune",
        f"output_dir={tmp_path}",
        *SMALL_DATA,
        *SMALL_LW,
        *QUIET,
        f"module.model.pretrained={distilled}",
    ]
    assert main(["fit", *args]) == 0
    ckpt = next((tmp_path / "demo_vlw_finetune" / "version_0" / "checkpoints").glob("last.ckpt"))
    module = VideoLookWhereClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    again = VideoLookWhereClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(video), again(video))
    # the selector stayed as distilled (frozen), the extractor moved
    exported = torch.load(distilled, weights_only=True)
    torch.testing.assert_close(
        module.net.lookwhere.selector.state_dict()["head.w2.weight"], exported["selector"]["head.w2.weight"]
    )
    assert not torch.equal(
        module.net.lookwhere.extractor.state_dict()["vivit.norm.weight"], exported["extractor"]["vivit.norm.weight"]
    ) or not torch.equal(module.net.head.weight, torch.zeros_like(module.net.head.weight))
    capsys.readouterr()
    assert main(["test", *args, f"ckpt_path={ckpt}", "module.eval_k=0.05"]) == 0
    out = capsys.readouterr().out
    assert "test/acc1=" in out and "test/clip_acc1=" in out
    summary = json.loads((tmp_path / "demo_vlw_finetune" / "version_0" / "summary_test.json").read_text())
    assert 0.0 <= summary["metrics"]["test/acc1"] <= 1.0


def test_tokenlearner_vivit_starts_from_a_vivit_checkpoint(tmp_path):
    args = [
        "experiment=demo_vlw_vivit",
        f"output_dir={tmp_path}",
        *SMALL_DATA,
        *SMALL_MODEL,
        *QUIET,
        "trainer.max_steps=1",
        "callbacks.images=null",
    ]
    assert main(["fit", *args]) == 0
    ckpt = tmp_path / "demo_vlw_vivit" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert "tubelet_head.weight" in state  # the dense teacher's extra head
    cfg, net = build_vivit({**_small_teacher(), "num_tokens": 4, "tokenlearner_loc": 2, "pretrained": str(ckpt)}, num_classes=4)
    own = net.state_dict()
    for key in ("patch_embed.proj.weight", "encoder.blocks.3.mlp.fc2.weight", "head.weight", "pos_embed"):
        torch.testing.assert_close(own[key], state[f"net.{key}"])
    assert cfg.pretrained == str(ckpt) and any(k.startswith("encoder.token_learner") for k in own)
    with pytest.raises(ConfigError, match="shape"):
        build_vivit({**_small_teacher(), "embed_dim": 32, "num_heads": 2, "pretrained": str(ckpt)}, num_classes=4)


def test_dense_teacher_targets_follow_the_track():
    ds = SyntheticMotion(2, 8, 32, "train", object_fraction=0.05)
    sample = ds[1]
    from lw_lightning.modules.video_dense import DenseVideoClassifier

    module = DenseVideoClassifier(_small_teacher(), num_classes=4)
    targets = module.tubelet_targets(sample["track"][None], sample["label"][None])
    where = track_tubelets(sample["track"][None], [2, 8, 8], (4, 4, 4))
    assert torch.equal(targets > 0, where) and int(targets.max()) == int(sample["label"]) + 1
    batch = {k: v[None] for k, v in sample.items()}
    batch = {k: torch.cat([v, v]) for k, v in batch.items()}
    loss = module.training_step(batch, 0)
    loss.backward()
    assert module.tubelet_head.weight.grad is not None


def test_synthetic_motion_is_deterministic_and_the_label_is_the_direction():
    for i in range(12):
        frames, label, boxes = render_motion_clip(3, "val", i, 16, 64)
        again = render_motion_clip(3, "val", i, 16, 64)
        assert (frames == again[0]).all() and label == again[1]
        assert frames.shape == (16, 64, 64, 3) and frames.dtype.name == "uint8"
        move = boxes[-1, :2] - boxes[0, :2]
        dx, dy = DIRECTIONS[CLASS_NAMES[label]]
        assert float(move[0] * dx + move[1] * dy) > 0.8 * float(abs(move).max())  # mostly along its class direction
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()  # stays in the frame
    other = render_motion_clip(3, "test", 0, 16, 64)[0]
    assert not (other == render_motion_clip(3, "val", 0, 16, 64)[0]).all()
    track = torch.tensor([[[0.0, 0.0, 9.0, 9.0]] * 4])  # a 9 px box at the origin in every frame
    where = track_tubelets(track, [2, 8, 8], (2, 4, 4)).reshape(2, 4, 4)
    assert where[:, :2, :2].all() and where.sum() == 8
    recall, hit = track_recall(torch.tensor([[0, 1, 31]]), track_tubelets(track, [2, 8, 8], (2, 4, 4)))
    assert float(recall[0]) == pytest.approx(2 / 8) and bool(hit[0])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["module.k_min=0.2", "module.k_max=0.1"], "module.k_min=0.2 keeps more tubelets (12) than module.k_max=0.1 (6)"),
        (["module.k_max=80"], "module.k_max=80 is more than the 64 tubelets"),
        (
            ["module.model.slice_quota=1", "module.k_min=2"],
            "model.slice_quota=1 x 4 temporal slices = 4 tubelets is more than module.k_min = 2",
        ),
        (["module.what=audio"], "module.what must be one of ('video', 'image')"),
        (["module.where=image"], "module.image_teacher is needed"),
        (["module.model.selector_img_size=40"], "finer than the extractor's"),
    ],
)
def test_bad_distill_configs_are_one_line(tmp_path, capsys, overrides, message):
    code = main(["fit", *distill_args(tmp_path), *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_bad_finetune_k_is_one_line(tmp_path, capsys, distilled):
    args = [
        "experiment=demo_vlw_finetune",
        f"output_dir={tmp_path}",
        *SMALL_DATA,
        *SMALL_LW,
        *QUIET,
        f"module.model.pretrained={distilled}",
    ]
    assert main(["fit", *args, "module.eval_k=1.5"]) == 2
    assert "module.eval_k=1.5" in capsys.readouterr().err
    assert main(["fit", *args, "module.model.slice_quota=1", "module.model.k=8", "module.train_k=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "= 4 tubelets is more than module.train_k = 2 kept" in err


def _cli(args: list[str]):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lw_lightning", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ddp_distill_same_k_on_all_ranks_and_finetune_validate_parity(tmp_path, distilled):
    """2 CPU processes (gloo): every rank draws the same k at every step, each sees its own shard;
    validating a fine-tuned checkpoint gives the single-process numbers (7 clips: shards 4 + 3)."""
    ddp = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    probe = ["callbacks.probe._target_=tests.scale_helpers.RankProbe", f"callbacks.probe.folder={tmp_path / 'ranks'}"]
    args = [
        *distill_args(tmp_path),
        "data.num_train=16",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "callbacks.images=null",
        "callbacks.flops=null",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=1",
        *probe,
    ]
    proc = _cli(["fit", *args, *ddp])
    assert proc.stdout.count("fit done:") == 1
    ranks = [json.loads((tmp_path / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["k"] == ranks[1]["k"] and len(ranks[0]["k"]) == 4 and len(set(ranks[0]["k"])) > 1
    assert all(len(set(g)) == 1 for g in ranks[0]["k_all_ranks"])
    assert not set(ranks[0]["indices"][:8]) & set(ranks[1]["indices"][:8])  # epoch 0: 2 steps of 4 clips per rank
    single_k = [
        VideoLookWhereDistill(_small_model(), teacher={"model": _small_teacher()}, init_from_teacher=False).sample_k(s)
        for s in range(4)
    ]
    assert ranks[0]["k"] == single_k  # the seed-and-step draw: what one process (or a resumed run) uses
    ft = [
        "experiment=demo_vlw_finetune",
        f"output_dir={tmp_path / 'ft'}",
        *SMALL_DATA,
        *SMALL_LW,
        *QUIET,
        f"module.model.pretrained={distilled}",
        "callbacks.images=null",
        "callbacks.flops=null",
    ]
    assert main(["fit", *ft]) == 0
    ckpt = tmp_path / "ft" / "demo_vlw_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    evaluation = [*ft[1:], f"ckpt_path={ckpt}", "data.num_val=7", "data.eval_batch_size=4"]
    single = run(load_config(None, [ft[0], *evaluation, "name=single"]), "validate").metrics
    _cli(["validate", ft[0], *evaluation, *ddp, "name=ddpval"])
    summary = json.loads((tmp_path / "ft" / "ddpval" / "version_0" / "summary_validate.json").read_text())
    assert summary["world_size"] == 2
    for key in ("val/acc1", "val/acc5", "val/clip_acc1"):
        assert summary["metrics"][key] == single[key], key
    assert summary["metrics"]["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)


@pytest.mark.parametrize("recipe", ["video_lookwhere_b_k400_distill.yaml", "video_lookwhere_b_k400_finetune.yaml"])
def test_k400_recipes_run_shrunk_on_the_kinetics_layout(recipe, tmp_path):
    """The Kinetics-400 recipes keep their structure at CPU size, through the Kinetics loader, on
    synthetic motion written in the CVDF layout (mp4 clips + annotation CSVs)."""
    from lw_lightning.data.synthetic_motion import write_kinetics_layout

    cfg = load_config(
        f"{EXP}/{recipe}",
        ["module.model.pretrained=x.pt", "module.teacher.checkpoint=x.ckpt"]
        if "distill" in recipe
        else ["module.model.pretrained=x.pt"],
    )
    assert cfg.module.model.preset == "base" and cfg.module.model.num_frames == 32 and cfg.data.num_frames == 32
    assert cfg.module.model.slice_quota == 1 and cfg.requires == "gpu"
    root = tmp_path / "k"
    write_kinetics_layout(root, {"train": 4, "val": 2, "test": 2}, num_frames=12, img_size=40)
    small = [
        f"data.root={root}",
        "data.num_frames=8",
        "data.frame_stride=1",
        "data.img_size=32",
        "data.train_short_side=[32,36]",
        "data.eval_short_side=36",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "data.test_clips=2",
        "data.test_crops=3",
        "module.model.num_frames=8",
        "module.model.img_size=32",
        "module.model.embed_dim=32",
        "module.model.depth=2",
        "module.model.num_heads=2",
        "module.model.selector_depth=1",
        "module.model.selector_num_frames=4",
        "module.model.selector_img_size=16",
        "trainer.precision=32-true",
        "trainer.accelerator=cpu",
        "trainer.fast_dev_run=true",
        f"trainer.default_root_dir={tmp_path}",
        f"output_dir={tmp_path}",
        *QUIET[:2],
        "module.model.k=0.5",
    ]  # 16 tubelets here: quota 1 x 4 slices needs k >= 4
    if "distill" in recipe:
        small += [
            "module.teacher.checkpoint=null",
            "module.k_min=0.25",
            "module.k_max=0.5",
            "module.val_k=0.25",
            "module.teacher.model={preset: tiny, num_frames: 8, img_size: 32, tubelet: [2, 16, 16], embed_dim: 32, depth: 2, num_heads: 2}",
        ]
    else:
        small += ["module.model.pretrained=null", "module.train_k=0.25", "module.eval_k=0.25"]
    assert main(["fit", f"experiment={recipe.removesuffix('.yaml')}", *small]) == 0


def test_deviation_where_target_marks_the_token_that_departs_from_the_clip():
    """where_signal=deviation: z-scored distance of each final token from the clip's mean token."""
    from lw_lightning.models.video_teacher import VideoTeacher, VideoTeacherConfig, build_video_teacher, deviation_target

    patch = torch.zeros(2, 10, 8)
    patch[0, 3] = 1.0  # one token departs from the background in clip 0, two in clip 1
    patch[1, [5, 7]] = torch.tensor([2.0] * 8)
    target = deviation_target(patch * 5.0)
    assert target.argmax(1).tolist()[0] == 3 and set(target[1].topk(2).indices.tolist()) == {5, 7}
    assert torch.allclose(target.mean(1), torch.zeros(2), atol=1e-5) and torch.allclose(target.std(1), torch.ones(2))
    assert torch.allclose(deviation_target(patch), target, atol=1e-5)  # scale-free: the softmax does not depend on the width
    teacher = build_video_teacher(VideoTeacherConfig(model=_small_teacher(), where_signal="deviation"))
    out = teacher(torch.randn(2, 3, 8, 32, 32))
    assert torch.allclose(out["attn"], deviation_target(out["patch"]), atol=1e-5)
    with pytest.raises(ConfigError, match="where_signal must be one of attention, deviation"):
        VideoTeacher(teacher.vivit, where_signal="saliency")
