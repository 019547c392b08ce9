"""HF transformers ViViT <-> ours: logits parity both ways (random weights, no download), ViViT +
TokenLearner from the same snapshot, the HF recipe end to end, preprocessing, bad snapshots."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import VivitConfig, VivitForVideoClassification, VivitImageProcessor, VivitModel  # noqa: E402

from lw_lightning.cli import main  # noqa: E402
from lw_lightning.config import ConfigError, load_config  # noqa: E402
from lw_lightning.data.kinetics import ClipTransform  # noqa: E402
from lw_lightning.data.video_augment import VideoAugment  # noqa: E402
from lw_lightning.models import hf_vivit  # noqa: E402
from lw_lightning.models.hf_vivit import load_hf_vivit, processor_data_overrides, save_hf_vivit, vivit_from_hf  # noqa: E402
from lw_lightning.models.video_checkpoint import vivit_with_weights  # noqa: E402
from lw_lightning.models.vivit import ViViT, vivit_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(
    image_size=32,
    num_frames=4,
    tubelet_size=[2, 8, 8],
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=96,
)


def _random_hf(cls=VivitForVideoClassification, seed: int = 0, **config) -> torch.nn.Module:
    """A transformers ViViT with every tensor random (its own init leaves CLS / posemb at zero):
    kernels N(0, 1/fan_in), so activations stay of order 1 at any width, as in a trained model."""
    torch.manual_seed(seed)
    model = cls(VivitConfig(**{**SMALL, "num_labels": 5, **config})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(("cls_token", "position_embeddings")):
                p.normal_(0, 0.5)
            elif p.ndim > 1:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.normal_(0, 0.05)
    return model


def _snapshot(tmp_path: Path, model: torch.nn.Module, name: str = "hf") -> Path:
    folder = tmp_path / name
    model.save_pretrained(str(folder))
    return folder


def _video(cfg: dict, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(
        batch, cfg["num_frames"], 3, cfg["image_size"], cfg["image_size"], generator=g
    )  # HF layout [B, T, C, H, W]


def _parity(tmp_path: Path, config: dict) -> dict[str, float]:
    hf = _random_hf(**config)
    folder = _snapshot(tmp_path, hf)
    ours = vivit_from_hf(folder).eval()
    video = _video({**SMALL, **config})
    with torch.no_grad():
        ref = hf(pixel_values=video).logits
        got = ours(video.transpose(1, 2))  # ours: [B, C, T, H, W]
    back_dir = save_hf_vivit(ours, tmp_path / "export")
    back = VivitForVideoClassification.from_pretrained(str(back_dir)).eval()
    with torch.no_grad():
        again = back(pixel_values=video).logits
    return {"import": (got - ref).abs().max().item(), "export": (again - got).abs().max().item(), "scale": ref.abs().max().item()}


def test_hf_vivit_logits_match_both_ways_small(tmp_path):
    diff = _parity(tmp_path, {})
    assert diff["scale"] > 0.1  # the logits are not trivially zero
    assert diff["import"] <= 1e-5 and diff["export"] <= 1e-5, diff


@pytest.mark.slow
def test_hf_vivit_logits_match_both_ways_12_layers_768(tmp_path):
    """ViViT-B's depth and width (12 × 768, MLP 3072, 12 heads) on a short, small clip."""
    started = time.perf_counter()
    diff = _parity(
        tmp_path,
        dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            image_size=64,
            num_frames=8,
            tubelet_size=[2, 16, 16],
        ),
    )
    assert diff["import"] <= 1e-5 and diff["export"] <= 1e-5, {**diff, "seconds": time.perf_counter() - started}


def test_vivit_model_without_head_matches_features(tmp_path):
    hf = _random_hf(VivitModel)
    folder = _snapshot(tmp_path, hf)
    ours = ViViT(vivit_config("base", **hf_vivit.config_overrides(json.loads((folder / "config.json").read_text()))), 7).eval()
    report = load_hf_vivit(ours, str(folder))
    assert "pooler.dense.weight" in report["skipped"] and "classifier.weight" not in report["loaded"]
    video = _video(SMALL)
    with torch.no_grad():
        torch.testing.assert_close(
            ours.forward_features(video.transpose(1, 2)), hf(pixel_values=video).last_hidden_state, rtol=0, atol=1e-5
        )
    assert torch.count_nonzero(ours.head.weight) == 0  # no head in a VivitModel: ours keeps its zero init


def test_vivit_with_tokenlearner_starts_from_the_same_snapshot(tmp_path):
    hf = _random_hf()
    folder = _snapshot(tmp_path, hf)
    plain = vivit_from_hf(folder)
    for overrides in (
        dict(num_tokens=4, tokenlearner_loc=2),
        dict(num_tokens=4, tokenlearner_loc=1, use_fuser=True),
        dict(num_tokens=4, tokenlearner_loc=2, classifier="gap"),
    ):
        tl = vivit_from_hf(folder, **overrides)
        own, ref = tl.state_dict(), plain.state_dict()
        shared = [k for k in own if k in ref and k != "pos_embed"]
        assert all(torch.equal(own[k], ref[k]) for k in shared if not (k == "cls_token" and "classifier" in overrides))
        if overrides.get("classifier") == "gap":  # no CLS: its position is left out too
            torch.testing.assert_close(tl.pos_embed, plain.pos_embed[:, 1:])
            assert not hasattr(tl, "cls_token")
        else:
            torch.testing.assert_close(tl.pos_embed, plain.pos_embed)
        assert any("token_learner" in k for k in own)  # TokenLearner modules exist and kept their own init
        with torch.no_grad():
            assert torch.isfinite(tl(torch.randn(1, 3, 4, 32, 32))).all()


def test_recipe_evaluates_an_hf_snapshot_through_the_cli(tmp_path, capsys, monkeypatch):
    """`test experiment=vivit_b_k400_hf module.model.pretrained=DIR`, in miniature."""
    from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics

    monkeypatch.chdir(ROOT)
    root = tmp_path / "sk"
    make_synthetic_kinetics(root, SyntheticKineticsSpec(train_per_class=1, val_per_class=1, test_per_class=1, num_frames=8))
    folder = _snapshot(tmp_path, _random_hf(num_labels=4))
    cfg = load_config("conf/experiment/vivit_b_k400_hf.yaml")
    assert cfg.module.model.classifier == "token" and cfg.module.view_average == "logits"
    assert (cfg.data.num_frames, cfg.data.img_size, cfg.data.eval_short_side, list(cfg.data.mean), list(cfg.data.std)) == (
        32,
        224,
        256,
        [0.5] * 3,
        [0.5] * 3,
    )
    small = [
        f"module.model.pretrained={folder}",
        f"data.root={root}",
        f"output_dir={tmp_path}",
        "data.num_frames=4",
        "data.img_size=32",
        "data.eval_short_side=36",
        "data.train_short_side=[36,40]",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "data.test_clips=2",
        "module.model.img_size=32",
        "module.model.num_frames=4",
        "module.model.tubelet=[2,8,8]",
        "module.model.embed_dim=48",
        "module.model.depth=3",
        "module.model.num_heads=3",
        "module.model.mlp_ratio=2.0",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    assert main(["test", "experiment=vivit_b_k400_hf", *small]) == 0
    out = capsys.readouterr().out
    assert "test/acc1=" in out and "test/corrupt_videos=0.0000" in out
    assert main(["test", "experiment=vivit_b_k400_hf", *small, "module.model.depth=2"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]  # (after the GPU-recipe warning)
    assert len(errors) == 1 and "have no place in it" in errors[0] and "the checkpoint has 3 blocks, the model 2" in errors[0]


# ---------------------------------------------------------------------------- name-based loading


def test_repo_ids_download_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    folder = _snapshot(tmp_path, _random_hf())
    asked = []

    def fake_download(repo_id, allow_patterns=None, **kw):
        asked.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    for source in ("hf:google/vivit-b-16x2-kinetics400", "google/vivit-b-16x2-kinetics400"):
        assert hf_vivit.is_hf_vivit_source(source)
        model = vivit_with_weights(
            vivit_config(
                "base", **hf_vivit.config_overrides(json.loads((folder / "config.json").read_text())), pretrained=source
            ),
            5,
        )
        assert torch.count_nonzero(model.head.weight) > 0
    assert [a[0] for a in asked] == ["google/vivit-b-16x2-kinetics400"] * 2 and "config.json" in asked[0][1]
    assert not hf_vivit.is_hf_vivit_source("vit_base_patch16_224.augreg_in21k")  # timm names stay image weights
    assert not hf_vivit.is_hf_vivit_source("weights/vit.pth")

    def offline(repo_id, **kw):
        raise OSError("We couldn't connect to the Hub\nmore lines")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        ConfigError, match=r"download from the HF Hub failed \(OSError: We couldn't connect to the Hub\); give a local snapshot"
    ) as err:
        hf_vivit.snapshot_folder("hf:google/vivit-b-16x2-kinetics400")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- bad snapshots


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_bad_snapshots_are_one_line(tmp_path):
    folder = _snapshot(tmp_path, _random_hf())
    small = vivit_config("base", **hf_vivit.config_overrides(json.loads((folder / "config.json").read_text())))
    # the wrong architecture (another width): the first key whose shape differs, with both shapes
    wide = ViViT(dataclasses.replace(small, embed_dim=96, num_heads=3), 5)
    with pytest.raises(ConfigError) as err:
        load_hf_vivit(wide, str(folder))
    assert _one_line(err).endswith(
        "does not fit the model: 'embeddings.cls_token' has shape [1, 1, 48] in the checkpoint, [1, 1, 96] in the model"
    )
    # another frame count: the position embedding is the first to differ
    longer = ViViT(dataclasses.replace(small, num_frames=8), 5)
    with pytest.raises(
        ConfigError, match=r"'embeddings.position_embeddings' has shape \[1, 33, 48\] in the checkpoint, \[1, 65, 48\]"
    ):
        load_hf_vivit(longer, str(folder))
    # a safetensors file missing tensors: how many, and the first few
    state = load_file(str(folder / "model.safetensors"))
    gone = [k for k in state if ".layer.2." in k]
    save_file({k: v for k, v in state.items() if k not in gone}, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError) as err:
        load_hf_vivit(ViViT(small, 5), str(folder))
    assert f"lacks {len(gone)} of the model's " in _one_line(err)
    assert "['encoder.layer.2.attention.attention.query.weight', " in str(err.value) and f"(+{len(gone) - 3} more)" in str(
        err.value
    )
    # a truncated file
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError) as err:
        load_hf_vivit(ViViT(small, 5), str(folder))
    assert "model.safetensors is truncated or corrupt" in _one_line(err)
    # not a ViViT config, and a folder without one
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ConfigError, match="describes a 'vit' model, not an HF ViViT"):
        load_hf_vivit(ViViT(small, 5), str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="is a folder without config.json"):
        vivit_with_weights(vivit_config("tiny", pretrained=str(empty)), 5)
    with pytest.raises(ConfigError, match="HF ViViT is Model 1"):
        load_hf_vivit(ViViT(vivit_config("tiny", variant="factorised"), 5), str(folder))


# ---------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("normalize", [False, True], ids=["rescale-offset", "then-normalize"])
def test_eval_transform_reproduces_vivit_image_processor(normalize):
    """Our eval pipeline (short side 256, centre crop 224, mean/std) with the values
    ``processor_data_overrides`` derives gives VivitImageProcessor's pixels."""
    processor = VivitImageProcessor(do_normalize=normalize)
    data = processor_data_overrides(processor.to_dict())
    assert (data["eval_short_side"], data["img_size"]) == (256, 224)
    assert (data["mean"], data["std"]) == (([0.75] * 3, [0.25] * 3) if normalize else ([0.5] * 3, [0.5] * 3))
    # workers crop (uint8), the device normalises (VideoAugment, as KineticsDataModule.on_after_batch_transfer)
    transform = ClipTransform(data["img_size"], [256, 320], data["eval_short_side"], "scale_jitter")
    device_side = VideoAugment(mean=data["mean"], std=data["std"])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(1, 4, 256, 340, 3), dtype=np.uint8)  # a Kinetics-sized clip, short side 256
    ours = device_side.normalize(transform.eval(frames, num_crops=1))[0]  # [C, T, H, W]
    ref = torch.from_numpy(processor(list(frames[0]), return_tensors="np")["pixel_values"][0]).permute(
        1, 0, 2, 3
    )  # [T, C, H, W] -> [C, T, H, W]
    torch.testing.assert_close(ours, ref.float(), rtol=0, atol=1e-5)
    lo, hi = (-3.0, 1.0) if normalize else (-1.0, 1.0)
    assert ours.min() >= lo - 1e-6 and ours.max() <= hi + 1e-6


def test_data_overrides_command(tmp_path, capsys):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(VivitImageProcessor(do_normalize=False).to_dict()))
    assert hf_vivit.main(["--data-overrides", str(tmp_path)]) == 0
    assert (
        capsys.readouterr().out.strip()
        == "data.eval_short_side=256 data.img_size=224 data.mean=[0.5,0.5,0.5] data.std=[0.5,0.5,0.5]"
    )
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    assert hf_vivit.main(["--data-overrides", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


if __name__ == "__main__":  # the numbers of docs/parity.md: python -m tests.test_hf_vivit [--full]
    import sys
    import tempfile

    B12 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, tubelet_size=[2, 16, 16])
    runs = {"small (3 x 48, 4 x 32^2)": {}, "12 x 768 (8 x 64^2)": dict(B12, image_size=64, num_frames=8)}
    if "--full" in sys.argv:  # the checkpoint's own input: 32 frames of 224^2, 3137 tokens (minutes on 2 CPU cores)
        runs["12 x 768 (32 x 224^2)"] = dict(B12, image_size=224, num_frames=32)
    for label, config in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            diff = _parity(Path(tmp), config)
            print(
                f"| {label} | {diff['import']:.2e} | {diff['export']:.2e} | {diff['scale']:.2f} | {time.perf_counter() - started:.0f} s |",
                flush=True,
            )
