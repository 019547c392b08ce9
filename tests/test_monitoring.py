"""TensorBoard output (scalars, hparams, pictures), run summaries, FLOPs and throughput callbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lw_lightning.callbacks.images import SelectionImages
from lw_lightning.callbacks.perf import batch_size_of
from lw_lightning.cli import main
from lw_lightning.config import load_config
from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics
from lw_lightning.flops import image_model_flops
from lw_lightning.modules.classification import ImageClassifier
from lw_lightning.modules.distill import LookWhereDistill
from lw_lightning.modules.video import VideoClassifier
from lw_lightning.tasks import run

from .conftest import ROOT, tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"
TINY_LW = {"arch": "lookwhere", "preset": "tiny", "img_size": [112, 112], "selector_img_size": 56}


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _events(log_dir: str | Path) -> EventAccumulator:
    files = list(Path(log_dir).glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_fit_writes_scalars_hparams_and_selection_pictures(tmp_path, capsys):
    overrides = [
        *tiny_overrides(tmp_path, "lookwhere"),
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "callbacks.throughput.window=1",
        "module.eval_k=8",
        "module.train_k=8",
    ]
    assert main(["fit", "experiment=demo_vit", *overrides]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary_lines = [line for line in out if line.startswith("fit done:")]
    assert len(summary_lines) == 1 and "val/acc1=" in summary_lines[0] and "perf/gflops_per_sample=" in summary_lines[0]
    log_dir = tmp_path / "runs" / "demo_vit" / "version_0"
    acc = _events(log_dir)
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss",
        "val/loss",
        "val/acc1",
        "val/acc5",
        "lr-AdamW/pg1",
        "perf/train_samples_per_sec",
        "perf/val_samples_per_sec",
        "perf/gflops_per_sample",
        "hp/val/acc1",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert all(e.value > 0 for e in acc.Scalars("perf/train_samples_per_sec"))
    flops = acc.Scalars("perf/gflops_per_sample")
    assert len(flops) == 1 and flops[0].step == 0  # logged once
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")  # the hparams tab, with final metrics
    pictures = acc.Images("images/selection")
    assert len(pictures) == 2  # every validation epoch (not the sanity check)
    assert pictures[0].width > 112 and pictures[0].height >= 112  # a grid of 112-px overlays
    summary = json.loads((log_dir / "summary_fit.json").read_text())
    assert summary["command"] == "fit" and summary["world_size"] == 1 and summary["global_step"] == 4
    assert summary["metrics"]["val/acc1"] == pytest.approx(float(summary_lines[0].split("val/acc1=")[1].split()[0]), abs=1e-4)
    assert Path(summary["best_model_path"]).is_file()


def test_validate_logs_flops_once_and_summary(tmp_path):
    cfg = load_config(DEMO, [*tiny_overrides(tmp_path, "lookwhere"), "module.eval_k=8", "name=v"])
    result = run(cfg, "validate")
    log_dir = Path(result.log_dir)
    assert json.loads((log_dir / "summary_validate.json").read_text())["metrics"]["val/acc1"] == result.metrics["val/acc1"]
    acc = _events(log_dir)
    assert len(acc.Scalars("perf/gflops_per_sample")) == 1
    assert len(acc.Images("images/selection")) == 1


def test_flops_per_sample_matches_flop_counter_and_grows_with_k():
    small = ImageClassifier({**TINY_LW}, num_classes=4, eval_k=8).eval()
    large = ImageClassifier({**TINY_LW}, num_classes=4, eval_k=32).eval()
    large.load_state_dict(small.state_dict())
    f8, f32 = small.flops_per_sample(), large.flops_per_sample()
    assert f8 is not None and f32 is not None and f8 < f32
    # within the head's matmul of the backbone-only count
    backbone = image_model_flops(small.net, (112, 112), k=8)
    assert backbone <= f8 <= backbone + 2 * 96 * 4 + 10


def test_batch_size_of_reads_images_videos_and_lists():
    assert batch_size_of({"image": torch.zeros(3, 1), "label": torch.zeros(3)}) == 3
    assert batch_size_of({"video": torch.zeros(5, 2)}) == 5
    assert batch_size_of([torch.zeros(7, 2), torch.zeros(7)]) == 7


def test_selection_pictures_for_distillation_student_with_sign_boxes():
    module = LookWhereDistill(
        TINY_LW, {"name": None, "preset": "tiny", "img_size": [112, 112]}, k_min=4, k_max=8, init_from_teacher=False
    ).eval()
    batch = {"image": torch.randn(3, 3, 112, 112), "box": torch.tensor([[8.0, 8.0, 40.0, 40.0]] * 3)}
    pictures = SelectionImages(ncols=2).pictures(module, batch)
    grid = pictures["images/selection"]
    assert grid.size == (2 * 116 + 4, 2 * 116 + 4)  # 2 columns x 2 rows of 112 px, 4 px padding
    # the green box outline of sample 0 is drawn at (8, 8) inside the first tile (offset 4 px)
    assert grid.getpixel((4 + 8, 4 + 20))[1] == 255


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sk") / "synthetic_kinetics"
    make_synthetic_kinetics(root, SyntheticKineticsSpec(train_per_class=2, val_per_class=1, test_per_class=1, num_frames=16))
    return root


def test_tokenlearner_maps_per_frame_in_tensorboard(kinetics, tmp_path):
    cfg = load_config(
        "conf/experiment/demo_video.yaml",
        [
            f"data.root={kinetics}",
            f"output_dir={tmp_path}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "data.batch_size=4",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "callbacks.images.num_samples=2",
        ],
    )
    result = run(cfg, "fit")
    acc = _events(result.log_dir)
    tags = set(acc.Tags()["images"])
    assert {"images/tokenlearner/0", "images/tokenlearner/1"} <= tags
    pic = acc.Images("images/tokenlearner/0")[0]
    # demo_video: 4 temporal slices (rows) x (frame + 4 token maps) of 64 px, 2 px padding
    assert (pic.width, pic.height) == (5 * 66 + 2, 4 * 66 + 2)
    assert "perf/gflops_per_sample" in acc.Tags()["scalars"]


def test_video_pictures_use_the_first_evaluation_view():
    module = VideoClassifier({"preset": "tiny", "num_tokens": 4, "tokenlearner_loc": 2}, num_classes=3).eval()
    c = module.model_cfg
    views = torch.randn(2, 3, 3, c.num_frames, c.img_size, c.img_size)
    pictures = SelectionImages().pictures(module, {"video": views})
    assert sorted(pictures) == ["images/tokenlearner/0", "images/tokenlearner/1"]
    no_tl = VideoClassifier({"preset": "tiny", "num_tokens": 0}, num_classes=3).eval()
    assert SelectionImages().pictures(no_tl, {"video": views}) == {}
