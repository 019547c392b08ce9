"""The demo teacher's auxiliary patch loss (ImageClassifier.patch_loss_weight)."""

from __future__ import annotations

import torch

from lw_lightning.cli import main
from lw_lightning.modules.classification import ImageClassifier
from tests.conftest import tiny_overrides

TEACHER = "conf/experiment/demo_teacher.yaml"
TINY = {"arch": "vit", "preset": "tiny", "img_size": [56, 56], "selector_img_size": 28}


def test_patch_targets_are_the_majority_class_per_patch():
    module = ImageClassifier(TINY, num_classes=4, patch_loss_weight=1.0)
    mask = torch.zeros(1, 56, 56, dtype=torch.long)
    mask[0, :14, :14] = 2  # patch (0,0) all class 2
    mask[0, :14, 14:22] = 3  # patch (0,1): 8 of 14 columns class 3 -> majority 3
    mask[0, 14:28, 28:33] = 1  # patch (1,2): 5 of 14 columns -> background wins
    targets = module.patch_targets(mask)
    assert targets.shape == (1, 16)
    expected = torch.zeros(16, dtype=torch.long)
    expected[0], expected[1] = 2, 3
    assert torch.equal(targets[0], expected)


def test_patch_loss_adds_to_the_training_loss_and_gets_gradients():
    torch.manual_seed(0)
    module = ImageClassifier(TINY, num_classes=4, patch_loss_weight=1.0)
    batch = {"image": torch.randn(2, 3, 56, 56), "label": torch.tensor([1, 0]), "mask": torch.zeros(2, 56, 56, dtype=torch.long)}
    batch["mask"][0, :28, :28] = 1
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # no trainer attached
    module.log_dict = lambda *a, **kw: None
    loss = module.training_step(batch, 0)
    ce = torch.nn.functional.cross_entropy(module(batch["image"])[0], batch["label"])
    assert abs(float(loss) - (float(ce) + logged["train/patch_loss"])) < 1e-5
    loss.backward()
    assert module.patch_head.weight.grad is not None and module.patch_head.weight.grad.abs().sum() > 0


def test_teacher_recipe_fits_and_reloads(tmp_path, root, monkeypatch, capsys):
    monkeypatch.chdir(root)
    assert (
        main(
            [
                "fit",
                "experiment=demo_teacher",
                *tiny_overrides(tmp_path),
                "trainer.max_steps=2",
                "trainer.limit_val_batches=1",
                "callbacks.images=null",
            ]
        )
        == 0
    )
    ckpt = next((tmp_path / "runs" / "demo_teacher").glob("version_0/checkpoints/last.ckpt"))
    reloaded = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert reloaded.hparams.patch_loss_weight == 1.0 and reloaded.patch_head is not None


def test_patch_loss_needs_masks_and_the_full_res_vit(tmp_path, root, monkeypatch, capsys):
    monkeypatch.chdir(root)
    code = main(
        [
            "fit",
            "experiment=demo_teacher",
            *tiny_overrides(tmp_path),
            "data.masks=false",
            "trainer.max_steps=1",
            "callbacks.images=null",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.masks=true" in err[0]
    code = main(["fit", "experiment=demo_teacher", *tiny_overrides(tmp_path, "lookwhere"), "trainer.max_steps=1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "module.model.arch=vit" in err[0]
    assert not (tmp_path / "runs" / "demo_teacher").exists()
