"""The model registry (issue 25): every registered name builds, runs at an input size other than
its default, and gives the same outputs after a save and a reload; the names are timm's too; the
released LookWhere layout loads through ``create_model`` at 224, 518, 994 and 518×742 and computes
what the released code computes."""

from __future__ import annotations

import io

import pytest
import timm
import torch

import lw_lightning
from lw_lightning.errors import ConfigError
from lw_lightning.models.registry import create_model, list_models, model_config_of, model_spec

from .test_lookwhere_release import EXT_DEPTH, SEL_DEPTH, SMALL, release_shaped, released_semantics, small_release  # noqa: F401


def _small_input_size(name: str) -> tuple[dict, tuple[int, ...]]:
    """Overrides for an input size other than the name's default, and the input's shape."""
    spec = model_spec(name)
    cfg = model_config_of(name)
    if spec.family == "image":
        p = cfg.patch_size
        hw = [8 * p, 12 * p]  # not the default, not square
        return {"img_size": hw}, (2, 3, *hw)
    t, h, _ = cfg.tubelet
    frames, side = 4 * t, 4 * h
    over = {"num_frames": frames, "img_size": side}
    if spec.family == "video_lookwhere":
        over.update(selector_num_frames=2 * t, selector_img_size=2 * h, slice_quota=0)
    return over, (2, 3, frames, side, side)


def _out(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model.eval()(x)
    return out["cls"] if isinstance(out, dict) else out


def test_names_are_listed_here_and_in_timm() -> None:
    names = list_models()
    assert len(names) >= 30 and names == sorted(names)
    families = {model_spec(n).family for n in names}
    assert families == {"image", "vivit", "video_lookwhere"}
    assert set(timm.list_models("lookwhere*")) == set(list_models("lookwhere*")) and len(list_models("lookwhere*")) >= 7
    assert "vivit_fe_base_16x2_224_32f" in timm.list_models("vivit*")
    assert lw_lightning.list_models("tokenlearner_vit_*") == list_models("tokenlearner_vit_*")  # the package's lazy names


def _fill(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn from U(-0.05, 0.05): a fast stand-in for the init (skipped, see
    below), with finite, input-dependent outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) * 0.1 - 0.05)
    return model


def _tiered(name: str) -> object:
    """ViT-B and ViT-L sizes take 5-50 s each on the 2-core CPU: the slow tier; the others (every
    family, the demos' sizes) run in the default tier."""
    big = any(f"_{size}_" in name for size in ("small", "base", "large"))
    return pytest.param(name, marks=pytest.mark.slow) if big else name


@pytest.mark.parametrize("name", [_tiered(n) for n in list_models()])
def test_every_registered_model_builds_runs_saves_and_reloads(name: str, no_weight_init) -> None:
    """Built without its random init (ViT-L's alone takes seconds here): the first copy is filled
    with random values, the second keeps uninitialised memory, so any tensor the reload missed
    changes the outputs."""
    over, shape = _small_input_size(name)
    model = _fill(create_model(name, **over), seed=0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = _out(model, x)
    assert torch.isfinite(before).all()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = create_model(name, **over)
    again.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(_out(again, x), before, rtol=0, atol=0)


def test_timm_create_model_builds_and_loads_a_local_file(small_release) -> None:  # noqa: F811
    path, state = small_release
    over = dict(depth=EXT_DEPTH, selector_depth=SEL_DEPTH, **SMALL)
    model = timm.create_model(
        "lookwhere_base_patch14_reg4_518", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **over
    )
    assert torch.equal(model.selector.head.w2.weight, state["selector"]["head"]["w2.weight"])
    assert model.pretrained_cfg["input_size"] == (3, 518, 518)
    with pytest.raises(ConfigError, match="no weights to download"):
        timm.create_model("lookwhere_tiny_patch14_224", pretrained=True)


SIZES = [(224, 224, 128), (518, 518, 137), (994, 994, 252), (518, 742, 196)]


@pytest.mark.parametrize("h, w, k", SIZES, ids=[f"{h}x{w}" for h, w, _ in SIZES])
def test_release_layout_through_create_model_computes_the_released_code(small_release, h, w, k) -> None:  # noqa: F811
    """The release's layout at its real grids (154 px selector, r = 4, 518 px extractor), narrow:
    ``create_model`` with only a size override reads r and the resize mode from the file (was: the
    Python API failed at every size outside 476-616 px) and reproduces the released inference."""
    path, state = small_release
    over = dict(depth=EXT_DEPTH, selector_depth=SEL_DEPTH, **SMALL)
    model = create_model("lookwhere_base_patch14_reg4_518", img_size=[h, w], pretrained=str(path), **over).eval()
    assert (model.cfg.selector_r, model.cfg.resize_mode) == (4, "official")
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h + w))
    with torch.no_grad():
        out = model(images, k=k)
        ref = released_semantics(state, images, k, SMALL["num_heads"])
    assert torch.equal(out["selected"], ref["selected"])
    torch.testing.assert_close(out["cls"], ref["cls"], rtol=0, atol=4e-6)


@pytest.mark.parametrize("size", [[224, 224], [518, 518], [994, 994], [518, 742]])
def test_release_shaped_file_loads_at_every_size(release_shaped, size, no_weight_init) -> None:  # noqa: F811
    """The release's exact shapes (ViT-B/14 reg4) by name, at each size of the paper and a non-square one."""
    path, state = release_shaped
    name = {224: "lookwhere_base_patch14_reg4_224", 994: "lookwhere_base_patch14_reg4_994"}.get(
        size[0], "lookwhere_base_patch14_reg4_518"
    )
    model = create_model(name, img_size=size, pretrained=str(path))
    assert (model.cfg.selector_r, model.cfg.resize_mode) == (4, "official")
    assert torch.equal(model.selector.head.w2.weight, state["selector"]["head"]["w2.weight"])
    assert torch.equal(model.extractor.backbone.blocks[11].mlp.fc2.weight, state["extractor"]["blocks.11.mlp.fc2.weight"])
    gh, gw = size[0] // 14, size[1] // 14
    assert model.extractor.backbone.pos_embed.shape == (1, gh * gw, 768)


def test_unknown_names_and_options_are_one_line() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model 'lookwhere_base_patch14_518' \(did you mean 'lookwhere_base_patch14_reg4_518'"
    ):
        create_model("lookwhere_base_patch14_518")
    with pytest.raises(ConfigError, match=r"lookwhere_tiny_patch14_224: unknown model option\(s\) \['img_sz'\]"):
        create_model("lookwhere_tiny_patch14_224", img_sz=[224, 224])
    with pytest.raises(ConfigError, match="takes no num_classes"):
        create_model("lookwhere_tiny_patch14_224", num_classes=10)
