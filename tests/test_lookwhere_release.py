"""The released LookWhere weights (``lookwhere_dinov2.pt``): official-mode outputs against an
independent computation of the released inference code's semantics, and every
``conf/experiment/lookwhere_*`` recipe loading a file of the release's layout and shapes.

The independent computation below is written with plain torch ops from the stored tensors (no
timm module, none of the model's helpers); it follows what antofuller/lookwhere's
``LookWhereDownstream`` does: a 154×154 bilinear selector input without antialiasing, the head's
r×r logits laid out and bilinearly resized to the patch grid, hard top-k, the 518 px positional
embeddings resampled once with plain bicubic (DINOv2's ``interpolate_pos_encoding``), the
selector's CLS + registers prepended, and K-NN filling with the first 5 of a full ``argsort``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from lw_lightning.config import load_config
from lw_lightning.models.checkpoint import load_official, resolve_pretrained_config
from lw_lightning.models.config import model_config
from lw_lightning.models.lookwhere import LookWhere

from .conftest import ROOT, random_weights, timm_layout

DINOV2 = "vit_base_patch14_reg4_dinov2.lvd142m"
P, PREFIX, EPS = 14, 5, 1e-6  # patch, CLS + 4 registers, timm's LayerNorm eps
#: a narrow, shallow copy of the release: the same key names, grids (154 px selector, 518 px
#: extractor) and r = 4 head, so resize and pos-embed semantics are what is tested
SMALL = dict(embed_dim=32, num_heads=2)
SEL_DEPTH, EXT_DEPTH = 1, 2


def official_layout(dim: int, heads: int, sel_depth: int, ext_depth: int, r: int = 4) -> dict[str, dict]:
    """Key names and shapes of the release (timm ViT-B/14 reg4 names; selector at 154 px,
    extractor at 518 px, head D -> 4D -> r²), at the given width and depths."""
    kw = dict(embed_dim=dim, num_heads=heads)
    return {
        "selector": {
            "backbone": timm_layout(DINOV2, img_size=154, depth=sel_depth, **kw),
            "head": {
                "w1.weight": torch.Size([4 * dim, dim]),
                "w1.bias": torch.Size([4 * dim]),
                "w2.weight": torch.Size([r * r, 4 * dim]),
                "w2.bias": torch.Size([r * r]),
            },
        },
        "extractor": timm_layout(DINOV2, img_size=518, depth=ext_depth, **kw),
    }


@pytest.fixture(scope="module")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    layout = official_layout(SMALL["embed_dim"], SMALL["num_heads"], SEL_DEPTH, EXT_DEPTH)
    state = {
        "selector": {
            "backbone": random_weights(layout["selector"]["backbone"], seed=1),
            "head": random_weights(layout["selector"]["head"], seed=2, scale=0.5),
        },
        "extractor": random_weights(layout["extractor"], seed=3),
    }
    path = tmp_path_factory.mktemp("release") / "lookwhere_dinov2.pt"
    torch.save(state, path)
    return path, state


# ---------------------------------------------------------------------------- the independent computation


def _block(x: torch.Tensor, sd: dict, pre: str, heads: int) -> torch.Tensor:
    b, t, d = x.shape
    h = F.layer_norm(x, (d,), sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], EPS)
    qkv = F.linear(h, sd[pre + "attn.qkv.weight"], sd[pre + "attn.qkv.bias"]).reshape(b, t, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
    a = (attn @ v).transpose(1, 2).reshape(b, t, d)
    x = x + sd[pre + "ls1.gamma"] * F.linear(a, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])
    h = F.layer_norm(x, (d,), sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], EPS)
    h = F.linear(
        F.gelu(F.linear(h, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"])),
        sd[pre + "mlp.fc2.weight"],
        sd[pre + "mlp.fc2.bias"],
    )
    return x + sd[pre + "ls2.gamma"] * h


def _encode(sd: dict, prefix: torch.Tensor, patches: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    x = torch.cat([prefix, patches], dim=1)
    for i in range(depth):
        x = _block(x, sd, f"blocks.{i}.", heads)
    return F.layer_norm(x, (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], EPS)


def _embed(sd: dict, images: torch.Tensor) -> torch.Tensor:
    return F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)


def released_semantics(state: dict, images: torch.Tensor, k: int, heads: int) -> dict[str, torch.Tensor]:
    """The released inference path on the stored tensors, for any H×W (square selector input)."""
    sel, head, ext = state["selector"]["backbone"], state["selector"]["head"], state["extractor"]
    b, _, hh, ww = images.shape
    gh, gw = hh // P, ww // P
    lo = F.interpolate(images, size=(154, 154), mode="bilinear", align_corners=False)
    x = _embed(sel, lo) + sel["pos_embed"]
    prefix0 = torch.cat([sel["cls_token"], sel["reg_token"]], dim=1).expand(b, -1, -1)
    x = _encode(sel, prefix0, x, SEL_DEPTH, heads)
    prefix, toks = x[:, :PREFIX], x[:, PREFIX:]
    logits = F.linear(F.gelu(F.linear(toks, head["w1.weight"], head["w1.bias"])), head["w2.weight"], head["w2.bias"])
    r = math.isqrt(logits.shape[-1])
    n = 154 // P
    smap = logits.reshape(b, n, n, r, r).permute(0, 1, 3, 2, 4).reshape(b, 1, n * r, n * r)
    smap = F.interpolate(smap, size=(gh, gw), mode="bilinear", align_corners=False).flatten(1)
    keep = smap.topk(k, dim=1, sorted=True).indices
    d = ext["pos_embed"].shape[-1]
    side = math.isqrt(ext["pos_embed"].shape[1])
    pos = ext["pos_embed"].reshape(1, side, side, d).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(gh, gw), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, gh * gw, d)
    x = _embed(ext, images) + pos
    x = x[torch.arange(b)[:, None], keep]
    x = _encode(ext, prefix, x, EXT_DEPTH, heads)
    tokens = x[:, PREFIX:]
    # K-NN fill: integer grid coordinates, distances, the first 5 of a full argsort
    cells = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij"), -1).reshape(-1, 2)
    known = torch.stack([keep // gw, keep % gw], dim=-1)
    dist = torch.sqrt(((cells[None, :, None] - known[:, None]) ** 2).sum(-1))
    near = dist.argsort(dim=-1)[:, :, :5]
    w = 1.0 / (dist.gather(-1, near) + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    picked = tokens[torch.arange(b)[:, None, None], near]
    dense = (picked * w.unsqueeze(-1)).sum(2)
    ties = (dist.sort(dim=-1).values[..., 4] == dist.sort(dim=-1).values[..., 5]).any().item()
    return {"selector_map": smap, "selected": keep, "cls": x[:, 0], "dense": dense, "ties": ties}


SIZES = [(224, 224, 128), (518, 518, 137), (994, 994, 252), (518, 742, 196)]


@pytest.mark.parametrize("h, w, k", SIZES, ids=[f"{h}x{w}" for h, w, _ in SIZES])
def test_official_mode_reproduces_the_released_inference(small_release, h, w, k):
    path, state = small_release
    cfg = resolve_pretrained_config(
        model_config("base", img_size=[h, w], depth=EXT_DEPTH, selector_depth=SEL_DEPTH, pretrained=str(path), **SMALL)
    )
    assert (cfg.selector_r, cfg.resize_mode) == (4, "official")  # from the file: the release
    model = load_official(LookWhere(cfg), path).eval()
    torch.manual_seed(h + w)
    images = torch.randn(2, 3, h, w)
    with torch.no_grad():
        out = model(images, k=k, dense=True)
        ref = released_semantics(state, images, k, SMALL["num_heads"])
    torch.testing.assert_close(out["selector_map"], ref["selector_map"], rtol=1e-5, atol=1e-5)  # logits of size ~40
    assert torch.equal(out["selected"], ref["selected"])  # the same patches in the same order
    torch.testing.assert_close(out["cls"], ref["cls"], rtol=0, atol=1e-5)
    assert ref["ties"]  # cells whose 5th and 6th neighbours are equally far: the tie-break matters
    dense = out["dense"].flatten(2).transpose(1, 2)
    torch.testing.assert_close(dense, ref["dense"], rtol=0, atol=1e-5)


def test_pretraining_mode_is_the_other_semantics(small_release):
    """The switch is not a no-op: antialiased resizes change the map at 518, timm's antialiased
    resampling the extractor's 224 px positional embeddings."""
    path, state = small_release
    base = dict(depth=EXT_DEPTH, selector_depth=SEL_DEPTH, selector_r=4, **SMALL)
    images = torch.randn(1, 3, 518, 518)
    maps = {}
    for mode in ("official", "pretraining"):
        model = load_official(LookWhere(model_config("base", img_size=[518, 518], resize_mode=mode, **base)), path).eval()
        with torch.no_grad():
            maps[mode] = model.selector(images, (37, 37))["map"]
        small = load_official(LookWhere(model_config("base", img_size=[224, 224], resize_mode=mode, **base)), path)
        maps[mode + "_pos"] = small.extractor.backbone.pos_embed.detach()
    assert (maps["official"] - maps["pretraining"]).abs().max() > 1e-3
    assert (maps["official_pos"] - maps["pretraining_pos"]).abs().max() > 1e-3
    for mode in ("official", "pretraining"):  # a 518 px extractor keeps the stored grid as it is
        model = load_official(LookWhere(model_config("base", img_size=[518, 518], resize_mode=mode, **base)), path)
        assert torch.equal(model.extractor.backbone.pos_embed, state["extractor"]["pos_embed"])


def test_our_exports_keep_their_mode_and_the_release_gets_official(small_release, tmp_path):
    from lw_lightning.models.checkpoint import save_official

    path, _ = small_release
    base = dict(img_size=[224, 224], depth=EXT_DEPTH, selector_depth=SEL_DEPTH, **SMALL)
    ours = save_official(LookWhere(model_config("base", selector_r=4, **base)), tmp_path / "ours.pt")
    assert resolve_pretrained_config(model_config("base", pretrained=str(ours), **base)).resize_mode == "pretraining"
    assert resolve_pretrained_config(model_config("base", pretrained=str(path), **base)).resize_mode == "official"
    # what the user sets wins; a model built directly takes the file's mode when loading
    assert (
        resolve_pretrained_config(model_config("base", pretrained=str(path), resize_mode="pretraining", **base)).resize_mode
        == "pretraining"
    )
    direct = load_official(LookWhere(model_config("base", selector_r=4, **base)), path)
    assert direct.cfg.resize_mode == "official"


def test_a_set_selector_r_that_the_file_contradicts_is_one_line(small_release):
    path, _ = small_release
    model = LookWhere(model_config("base", img_size=[224, 224], depth=EXT_DEPTH, selector_depth=SEL_DEPTH, selector_r=2, **SMALL))
    with pytest.raises(
        ValueError,
        match=r"selector head predicts 16 sub-patch logits per token, the model 4: set model.selector_r=4 \(or leave it unset\)",
    ):
        load_official(model, path)


def test_bad_resize_mode_and_the_old_antialias_switch_are_one_line():
    with pytest.raises(ValueError, match=r"model.resize_mode must be one of \('official', 'pretraining'\)"):
        model_config("tiny", resize_mode="jax")
    with pytest.raises(ValueError, match="model.antialias is replaced by model.resize_mode"):
        model_config("tiny", antialias=False)


# ---------------------------------------------------------------------------- every recipe loads the release


LOOKWHERE_RECIPES = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("lookwhere_*.yaml"))


@pytest.fixture(scope="module")
def release_shaped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A file with the release's exact layout, key names and shapes (ViT-B/14 reg4: 3-block
    selector at 154 px, r = 4 head, 12-block extractor at 518 px). Its tensors are views of one
    random buffer, so the file is a few MB, not 430: the loader sees the release's shapes."""
    layout = official_layout(768, 12, 3, 12)
    buf = torch.randn(3072 * 768 + 7, generator=torch.Generator().manual_seed(0))
    offset = iter(range(10**6))

    def fill(shapes: dict) -> dict:
        # consecutive tensors start at different offsets of the buffer
        return {k: fill(v) if isinstance(v, dict) else buf[next(offset) % 7 :][: math.prod(v)].view(v) for k, v in shapes.items()}

    state = fill(layout)
    path = tmp_path_factory.mktemp("release_b") / "lookwhere_dinov2.pt"
    torch.save(state, path)
    return path, state


def test_every_lookwhere_recipe_is_covered():
    assert LOOKWHERE_RECIPES == [
        "lookwhere_ade20k_518_k1024",
        "lookwhere_ade20k_518_k512",
        "lookwhere_in1k_224_k128",
        "lookwhere_sts_994_k10",
        "lookwhere_sts_994_k5",
        "lookwhere_sts_native_k10",
    ]


@pytest.mark.parametrize("recipe", LOOKWHERE_RECIPES)
def test_every_lookwhere_recipe_loads_the_release(recipe, release_shaped, no_weight_init):
    path, state = release_shaped
    cfg = load_config(ROOT / "conf" / "experiment" / f"{recipe}.yaml", [f"module.model.pretrained={path}"])
    assert cfg.module.model.get("selector_r") is None  # the recipe leaves r to the checkpoint
    module = instantiate(cfg.module, num_classes=10, _convert_="all")
    net, mcfg = module.net, module.model_cfg
    assert (mcfg.selector_r, mcfg.resize_mode) == (4, "official")
    assert (module.hparams["model"]["selector_r"], module.hparams["model"]["resize_mode"]) == (4, "official")
    gh, gw = mcfg.grid
    assert net.extractor.backbone.pos_embed.shape == (1, gh * gw, 768)
    assert torch.equal(net.selector.head.w2.weight, state["selector"]["head"]["w2.weight"])
    assert torch.equal(net.extractor.backbone.blocks[11].mlp.fc2.weight, state["extractor"]["blocks.11.mlp.fc2.weight"])
    assert torch.equal(net.selector.backbone.pos_embed, state["selector"]["backbone"]["pos_embed"])  # 154 px: as stored
