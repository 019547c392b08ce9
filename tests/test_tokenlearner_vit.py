"""The image TokenLearner-ViT (``arch: tokenlearner``, issue 14): insertion point, any H×W,
initialisation from ViT weights, checkpoint reload, and fit/test/predict through the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lw_lightning.callbacks.images import SelectionImages
from lw_lightning.cli import main
from lw_lightning.config import load_config
from lw_lightning.models.checkpoint import load_pretrained
from lw_lightning.models.config import model_config
from lw_lightning.models.lookwhere import FullResViT
from lw_lightning.models.tokenlearner import TokenLearnerV10, TokenLearnerV11
from lw_lightning.models.tokenlearner_vit import TokenLearnerViT
from lw_lightning.modules.classification import ImageClassifier
from lw_lightning.tasks import run

from .conftest import ROOT, tiny_overrides

DEMO = "conf/experiment/demo_vit.yaml"


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)
    torch.manual_seed(0)


def _tl(**fields) -> TokenLearnerViT:
    return TokenLearnerViT(model_config("tiny", arch="tokenlearner", img_size=[56, 56], **fields))


def _fast(tmp_path: Path, name: str, *extra: str) -> list[str]:
    """TokenLearner-ViT (tiny preset) on 56 px synthetic signs: 2 training steps."""
    return [
        *tiny_overrides(tmp_path, "tokenlearner", size=56),
        "data.num_train=8",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "callbacks.flops=null",
        f"name={name}",
        *extra,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------- the model


@pytest.mark.parametrize("loc, block", [(0, 0), (3, 3), (0.0, 0), (0.25, 1), (0.5, 2), (0.75, 3)])
def test_insertion_point_is_a_block_index_or_a_fraction(loc, block):
    model = _tl(tokenlearner_loc=loc, tokenlearner_tokens=3)
    assert model.encoder.loc == block
    seen = []
    for b in model.encoder.blocks:
        b.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    out = model(torch.randn(2, 3, 56, 56))
    # tiny preset: 1 CLS + 4 registers; 16 patches before TokenLearner, 3 learned tokens after it
    assert seen == [5 + 16] * block + [5 + 3] * (4 - block)
    assert out["cls"].shape == (2, 96) and out["tokens"].shape == (2, 3, 96) and out["maps"].shape == (2, 3, 16)


def test_fraction_of_the_paper_depths():
    for depth, fraction, block in [(12, 0.25, 3), (12, 0.5, 6), (12, 0.75, 9), (24, 0.5, 12), (12, 1 / 3, 4)]:
        cfg = model_config("vit_b16", arch="tokenlearner", depth=depth, tokenlearner_loc=fraction)
        assert cfg.tokenlearner_block() == block


@pytest.mark.parametrize("version, fuser", [("v1.1", False), ("v1.0", False), ("v1.1", True)])
def test_every_parameter_learns_and_any_hw_works(version, fuser):
    model = _tl(tokenlearner_loc=1, tokenlearner_version=version, tokenlearner_fuser=fuser)
    tl = model.first_token_learner()
    assert isinstance(tl, TokenLearnerV10 if version == "v1.0" else TokenLearnerV11)
    head = torch.nn.Linear(96, 3)
    # 56x84: a non-square 4x6 grid, not the configured 56x56 (posemb resampled as the full-res ViT does)
    out = model(torch.randn(2, 3, 56, 84))
    assert out["maps"].shape == (2, 8, 24)
    assert out["tokens"].shape == (2, 24 if fuser else 8, 96)
    F.cross_entropy(head(out["cls"]), torch.tensor([0, 2])).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if fuser:
        # the zero-initialised mixing makes a fused unit the identity at init, so the first step
        # only reaches the fuser through its mixing matrix (and norm2's bias); the rest follows
        assert model.encoder.fusers[0].mix.weight.grad.abs().sum() > 0
        dead = [n for n in dead if not n.startswith("encoder.fusers.")]
    assert not dead, dead  # every TokenLearner weight and the backbone's CLS/registers learn


def test_state_dict_stores_each_weight_once_in_timm_layout():
    model = _tl()
    keys = list(model.state_dict())
    assert not any(k.startswith("backbone.blocks.") for k in keys)
    assert any(k.startswith("encoder.blocks.0.") for k in keys) and any(k.startswith("encoder.token_learner.") for k in keys)
    full = FullResViT(model_config("tiny", arch="vit", img_size=[56, 56]))
    assert set(model.vit_state_dict()) == set(full.backbone.state_dict())


# ---------------------------------------------------------------------------- initialisation


def test_timm_name_plus_local_file_initialises_the_backbone(tmp_path):
    """A timm ViT-Ti/16 file (original layout: the pos_embed covers the CLS) loads into both the
    full-res ViT and the TokenLearner-ViT; the full-res ViT then reproduces timm's features."""
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    file = tmp_path / "vit_ti16.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(file))
    assert ref.pos_embed.shape[1] == 1 + 196
    shape = dict(embed_dim=192, depth=12, num_heads=3)
    full = FullResViT(model_config("vit_b16", arch="vit", **shape)).eval()
    load_pretrained(full, file, name="vit_tiny_patch16_224")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(full(x)["cls"], ref.forward_features(x)[:, 0], rtol=1e-4, atol=1e-4)
    tl = TokenLearnerViT(model_config("vit_b16", arch="tokenlearner", img_size=[160, 160], tokenlearner_loc=0.25, **shape))
    fresh_tl = {k: v.clone() for k, v in tl.encoder.token_learner.state_dict().items()}
    load_pretrained(tl, file, name="vit_tiny_patch16_224")
    assert torch.equal(tl.encoder.blocks[5].mlp.fc1.weight, ref.blocks[5].mlp.fc1.weight)
    assert torch.equal(tl.backbone.cls_token, ref.cls_token + ref.pos_embed[:, :1])  # CLS position folded in
    assert tl.backbone.pos_embed.shape == (1, 100, 192)  # 14x14 resampled to 10x10
    assert all(torch.equal(v, tl.encoder.token_learner.state_dict()[k]) for k, v in fresh_tl.items())  # from scratch


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory) -> Path:
    """A 2-step full-res ViT run of the demo recipe (56 px): our own ``.ckpt``."""
    tmp = tmp_path_factory.mktemp("vit")
    cfg = load_config(
        ROOT / DEMO,
        [
            *tiny_overrides(tmp, size=56),
            "data.num_train=8",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=1",
            "callbacks.images=null",
            "callbacks.flops=null",
            "name=vit",
        ],
    )
    result = run(cfg, "fit")
    return Path(result.log_dir) / "checkpoints" / "last.ckpt"


def test_our_full_res_vit_ckpt_initialises_the_backbone(vit_ckpt):
    module = ImageClassifier(
        dict(arch="tokenlearner", preset="tiny", img_size=[112, 112], tokenlearner_loc=0.5, pretrained=str(vit_ckpt)),
        num_classes=4,
    )
    state = torch.load(vit_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    vit = module.net.vit_state_dict()
    assert torch.equal(vit["blocks.3.attn.qkv.weight"], state["net.backbone.blocks.3.attn.qkv.weight"])
    assert torch.equal(vit["reg_token"], state["net.backbone.reg_token"])
    assert vit["pos_embed"].shape == (1, 64, 96) and state["net.backbone.pos_embed"].shape == (1, 16, 96)


def test_a_tokenlearner_ckpt_is_not_a_vit_to_start_from(tmp_path, vit_ckpt, capsys):
    assert main(["fit", "experiment=demo_vit", *_fast(tmp_path, "tl"), "callbacks.images=null"]) == 0
    tl_ckpt = tmp_path / "runs" / "tl" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["fit", "experiment=demo_vit", *_fast(tmp_path, "again"), f"module.model.pretrained={tl_ckpt}"]) == 2
    assert "is not a full-resolution ViT (model.arch=tokenlearner)" in _one_error_line(capsys)


# ---------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "loc, message",
    [
        ("-1", "model.tokenlearner_loc=-1 is outside the 4 blocks (a block index 0..4 or a fraction of the depth in [0, 1))"),
        ("5", "model.tokenlearner_loc=5 is outside the 4 blocks"),
        ("1.0", "model.tokenlearner_loc=1.0: a block index 0..4 or a fraction of the depth in [0, 1)"),
        ("1.5", "model.tokenlearner_loc=1.5: a block index"),
        ("-0.25", "model.tokenlearner_loc=-0.25: a block index"),
        (
            "4",
            "model.tokenlearner_loc=4 puts TokenLearner after the last block, where the CLS head never sees the learned tokens",
        ),
    ],
)
def test_bad_insertion_point_is_one_config_error(tmp_path, capsys, loc, message):
    code = main(["fit", "experiment=demo_vit", *_fast(tmp_path, "bad"), f"module.model.tokenlearner_loc={loc}"])
    err = _one_error_line(capsys)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "runs").exists()


def test_after_the_last_block_is_allowed_with_a_gap_head():
    model = _tl(tokenlearner_loc=4, tokenlearner_pool="gap", tokenlearner_tokens=2)
    out = model(torch.randn(1, 3, 56, 56))
    assert out["tokens"].shape == (1, 2, 96)
    torch.testing.assert_close(out["cls"], out["tokens"].mean(1))


def test_segmentation_refuses_the_tokenlearner_arch():
    from lw_lightning.modules.segmentation import Segmenter

    with pytest.raises(ValueError, match="segmentation needs per-patch features"):
        Segmenter(dict(arch="tokenlearner", preset="tiny", img_size=[56, 56]), num_classes=3)


# ---------------------------------------------------------------------------- Lightning runs


@pytest.mark.parametrize("extra", [["module.model.tokenlearner_version=v1.0"], ["module.model.tokenlearner_fuser=true"]])
def test_checkpoint_reload_gives_the_same_logits(tmp_path, extra):
    result = run(load_config(ROOT / DEMO, _fast(tmp_path, "reload", "callbacks.images=null", *extra)), "fit")
    trained = result.trainer.lightning_module.cpu().eval()
    assert trained.global_step == 2
    x = torch.randn(3, 3, 56, 56)
    reloaded = ImageClassifier.load_from_checkpoint(Path(result.log_dir) / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    assert reloaded.model_cfg.arch == "tokenlearner" and reloaded.model_cfg == trained.model_cfg
    with torch.no_grad():
        a, b = trained(x)[0], reloaded(x)[0]
        fresh = ImageClassifier(reloaded.hparams.model, num_classes=4).eval()(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, fresh)  # a freshly initialised model differs: the weights came from the file


def test_fit_test_predict_through_the_cli_with_maps_and_token_peaks(tmp_path, capsys):
    overrides = _fast(tmp_path, "tl_cli", "module.model.tokenlearner_tokens=4")
    assert main(["fit", "experiment=demo_vit", *overrides]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "tl_cli" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    for command in ("test", "predict"):
        assert main([command, "experiment=demo_vit", *overrides, "ckpt_path=last"]) == 0, capsys.readouterr().err
    assert "test/acc1" in (run_dir / "summary_test.json").read_text()
    rows = list(csv.DictReader((run_dir / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 8  # data.num_test=8
    for r in rows:
        peaks = [int(i) for i in r["token_peaks"].split()]
        assert len(peaks) == 4 and all(0 <= i < 16 for i in peaks)  # one patch of the 4x4 grid per token
        assert r["selected"] == "" and 0 <= int(r["pred"]) < 4
    # TensorBoard: the image TokenLearner maps were logged during fit
    events = list(run_dir.glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for e in events:
        acc = EventAccumulator(str(e), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    assert "images/tokenlearner" in tags


def test_tokenlearner_picture_is_one_row_per_sample(tmp_path):
    module = ImageClassifier(dict(arch="tokenlearner", preset="tiny", img_size=[56, 56], tokenlearner_tokens=3), num_classes=4)
    batch = {"image": torch.randn(2, 3, 56, 56)}
    pictures = SelectionImages().pictures(module.eval(), batch)
    assert list(pictures) == ["images/tokenlearner"]
    w, h = pictures["images/tokenlearner"].size
    assert (w, h) == (2 + 4 * (96 + 2), 2 + 2 * (96 + 2))  # 1 image + 3 maps per row, 2 rows
