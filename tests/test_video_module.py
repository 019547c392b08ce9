"""VideoClassifier: multi-view averaging, corrupt-video counts, Trainer and CLI runs, recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lw_lightning.cli import main
from lw_lightning.config import load_config
from lw_lightning.data.kinetics import KineticsDataModule
from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics
from lw_lightning.modules.video import VideoClassifier

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "conf" / "experiment").glob("vivit*.yaml"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sk") / "synthetic_kinetics"
    make_synthetic_kinetics(root, SyntheticKineticsSpec(train_per_class=4, val_per_class=1, test_per_class=1, num_frames=16))
    return root


def _quiet_trainer(**kw) -> pl.Trainer:
    opts = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return pl.Trainer(**{**opts, **kw})


class FirstPixelLogits(nn.Module):
    """Stands in for ViViT: logits are the first pixel of each channel (K=3 classes)."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video[:, :, 0, 0, 0]


def test_multi_view_softmax_average_and_corrupt_count():
    module = VideoClassifier({"preset": "tiny"}, num_classes=3)
    module.net = FirstPixelLogits()
    views = torch.zeros(2, 3, 3, 2, 2, 2)  # 2 videos x 3 views
    # video 0 (label 2): two views lean weakly to class 0, one strongly to class 2
    views[0, 0, :, 0, 0, 0] = torch.tensor([0.2, 0.0, 0.0])
    views[0, 1, :, 0, 0, 0] = torch.tensor([0.2, 0.0, 0.0])
    views[0, 2, :, 0, 0, 0] = torch.tensor([0.0, 0.0, 9.0])
    views[1] = 5.0  # undecodable video: must be excluded, not scored
    batch = {"video": views, "label": torch.tensor([2, 0]), "index": torch.tensor([0, 1]), "valid": torch.tensor([True, False])}
    metrics = _quiet_trainer().test(module, dataloaders=DataLoader([batch], batch_size=None), verbose=False)[0]
    assert metrics["test/acc1"] == 1.0  # mean softmax favours class 2
    assert metrics["test/clip_acc1"] == pytest.approx(1 / 3)  # per view: 1 of 3 right
    assert metrics["test/corrupt_videos"] == 1.0


@pytest.mark.parametrize("average, acc1", [("softmax", 1.0), ("logits", 0.0)])
def test_view_average_softmax_or_logits(average, acc1):
    """One confident view for class 0 against two for class 2: the mean softmax picks 2, the mean
    logits (scenic's test_step) pick 0."""
    module = VideoClassifier({"preset": "tiny"}, num_classes=3, view_average=average)
    module.net = FirstPixelLogits()
    views = torch.zeros(1, 3, 3, 2, 2, 2)
    views[0, 0, :, 0, 0, 0] = torch.tensor([10.0, 0.0, 0.0])
    views[0, 1:, :, 0, 0, 0] = torch.tensor([0.0, 0.0, 4.0])
    batch = {"video": views, "label": torch.tensor([2]), "index": torch.tensor([0])}
    metrics = _quiet_trainer().test(module, dataloaders=DataLoader([batch], batch_size=None), verbose=False)[0]
    assert metrics["test/acc1"] == acc1
    with pytest.raises(ValueError, match="view_average"):
        VideoClassifier({"preset": "tiny"}, num_classes=3, view_average="max")


def test_checkpoint_from_before_the_activation_option_keeps_exact_gelu(tmp_path, caplog):
    """Checkpoints written before model.activation existed were trained with exact GELU."""
    trained = VideoClassifier({"preset": "tiny", "activation": "gelu"}, num_classes=3)
    torch.nn.init.normal_(trained.net.head.weight)
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": trained.state_dict(),
            "pytorch-lightning_version": pl.__version__,
            "hyper_parameters": {"model": {"preset": "tiny"}, "num_classes": 3},
        },
        path,
    )  # no "activation": old
    with caplog.at_level("WARNING"):
        loaded = VideoClassifier.load_from_checkpoint(path)
    assert "trained with exact GELU" in caplog.text
    assert {b.mlp.act.approximate for b in loaded.net.encoder.blocks} == {"none"}
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), trained(video))
    fresh = VideoClassifier({"preset": "tiny"}, num_classes=3)  # a current checkpoint is left alone
    fresh.on_load_checkpoint({"hyper_parameters": {"model": {"preset": "tiny", "activation": "gelu_tanh"}}})
    assert {b.mlp.act.approximate for b in fresh.net.encoder.blocks} == {"tanh"}


def test_fast_dev_run_with_datamodule(synthetic):
    data = KineticsDataModule(
        str(synthetic),
        num_frames=8,
        frame_stride=2,
        img_size=32,
        train_short_side=[32, 36],
        eval_short_side=36,
        flip=False,
        batch_size=4,
        test_clips=2,
        test_crops=3,
    )
    module = VideoClassifier(
        {"preset": "tiny", "num_tokens": 4, "tokenlearner_loc": 2}, num_classes=data.num_classes, optimizer="sgd", lr=0.05
    )
    before = [p.detach().clone() for p in module.parameters()]
    trainer = _quiet_trainer(fast_dev_run=True, gradient_clip_val=1.0)
    trainer.fit(module, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    assert {"test/acc1", "test/acc5", "test/clip_acc1", "test/clip_acc5", "test/corrupt_videos"} <= set(metrics)


def test_cli_fit_then_multi_view_test(synthetic, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    common = [
        "experiment=demo_video",
        f"data.root={synthetic}",
        f"output_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.batch_size=8",
    ]
    assert main(["fit", *common, "trainer.max_epochs=1"]) == 0
    ckpt = tmp_path / "demo_video" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    capsys.readouterr()
    assert main(["test", *common, f"ckpt_path={ckpt}", "data.test_clips=2", "data.test_crops=3"]) == 0
    out = capsys.readouterr().out
    for key in ("test/acc1=", "test/clip_acc1=", "test/acc5=", "test/corrupt_videos=0.0000"):
        assert key in out


def test_cli_missing_data_root_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["fit", "experiment=demo_video", f"data.root={tmp_path / 'nowhere'}", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err


def _small(synthetic: Path, tmp_path: Path) -> list[str]:
    """Shrink a ViViT-B recipe to CPU-test size while keeping its structure (TokenLearner on/off)."""
    return [
        f"data.root={synthetic}",
        f"output_dir={tmp_path}",
        "data.num_frames=4",
        "data.img_size=32",
        "data.train_short_side=[32,36]",
        "data.eval_short_side=36",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "data.test_clips=2",
        "data.test_crops=3",
        "module.model.pretrained=null",
        "module.model.num_frames=4",
        "module.model.img_size=32",
        "module.model.embed_dim=32",
        "module.model.depth=2",
        "module.model.num_heads=2",
        "module.model.tokenlearner_loc=1",
        "trainer.precision=32-true",
        "trainer.accelerator=cpu",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"trainer.default_root_dir={tmp_path}",  # fast_dev_run drops the logger: checkpoints would land in cwd
    ]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_fast_dev_run_on_synthetic_layout(recipe, synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(f"conf/experiment/{recipe}")
    assert cfg.module.model.preset == "base" and cfg.data.num_frames == 32 and cfg.data.frame_stride == 2
    assert cfg.data.img_size == 224 and cfg.trainer.gradient_clip_val == 1.0
    assert main(["fit", f"experiment={Path(recipe).stem}", *_small(synthetic, tmp_path)]) == 0


def test_recipes_differ_only_where_they_should():
    tl8, tl16, base, k600, hf = (
        load_config(f"conf/experiment/{n}.yaml")
        for n in ("vivit_b_tl8_k400", "vivit_b_tl16_k400", "vivit_b_k400", "vivit_b_tl16_k600", "vivit_b_k400_hf")
    )
    assert (hf.module.model.classifier, hf.module.model.num_tokens) == (
        "token",
        0,
    ) and "classifier" not in base.module.model  # gap
    assert (tl8.module.model.num_tokens, tl16.module.model.num_tokens, base.module.model.num_tokens) == (8, 16, 0)
    assert tl8.module.model.tokenlearner_loc == 6  # half of ViT-B's 12 blocks
    assert "kinetics400" in tl16.data.root and "kinetics600" in k600.data.root
    assert k600.module.model.num_tokens == 16


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_full_size_fast_dev_run(recipe, synthetic, tmp_path, monkeypatch):
    """The recipes' real ViViT-B at 32x224^2 (random init), one step each on CPU: minutes."""
    monkeypatch.chdir(ROOT)
    args = [
        f"data.root={synthetic}",
        f"output_dir={tmp_path}",
        "data.batch_size=1",
        "data.eval_batch_size=1",
        "data.num_workers=0",
        "module.model.pretrained=null",
        "trainer.precision=32-true",
        "trainer.accelerator=cpu",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        f"trainer.default_root_dir={tmp_path}",
    ]
    assert main(["fit", f"experiment={Path(recipe).stem}", *args]) == 0
