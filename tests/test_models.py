"""LookWhere / full-res ViT model tests: shapes, selection, embedding, K-NN fill, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from lw_lightning.models.config import model_config, resolve_k
from lw_lightning.models.knn_upsample import grid_coords, knn_upsample
from lw_lightning.models.lookwhere import LookWhere, build_model
from lw_lightning.models.vit import embed_all, embed_selected, gather_tokens, grid_pos_embed


def tiny(arch: str = "lookwhere", **kw):
    torch.manual_seed(0)
    return build_model(model_config("tiny", arch=arch, img_size=[112, 112], selector_img_size=56, **kw))


@pytest.mark.parametrize("arch", ["lookwhere", "vit"])
@pytest.mark.parametrize("hw", [(112, 112), (84, 140), (140, 56)])
def test_output_shapes_square_and_non_square(arch, hw):
    model = tiny(arch).eval()
    h, w = hw
    grid = (h // 14, w // 14)
    n = grid[0] * grid[1]
    out = model(torch.randn(2, 3, h, w), k=0.25, dense=True)
    assert out["cls"].shape == (2, 96)
    assert out["dense"].shape == (2, 96, *grid)
    if arch == "lookwhere":
        k = resolve_k(0.25, n)
        assert out["selected"].shape == (2, k)
        assert out["tokens"].shape == (2, k, 96)
        assert out["selector_map"].shape == (2, n)
        assert out["prefix"].shape == (2, 5, 96)
    else:
        assert out["tokens"].shape == (2, n, 96)


def test_rejects_sizes_not_multiple_of_patch():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny()(torch.randn(1, 3, 112, 100))


def test_topk_picks_highest_scoring_patches():
    model = tiny().eval()
    images = torch.randn(3, 3, 112, 112)
    out = model(images, k=7)
    smap = out["selector_map"]
    sel = out["selected"]
    picked = smap.gather(1, sel)
    # descending order, and nothing unselected scores higher than the lowest selected
    assert torch.all(picked[:, :-1] >= picked[:, 1:])
    mask = torch.ones_like(smap, dtype=torch.bool).scatter(1, sel, False)
    assert torch.all(smap.masked_fill(~mask, -math.inf).max(1).values <= picked[:, -1])


def test_k_as_count_or_fraction():
    assert resolve_k(128, 256) == 128
    assert resolve_k(1000, 256) == 256
    assert resolve_k(0.5, 256) == 128
    assert resolve_k(0.05, 5041) == 252  # the paper's k=5% at 994 px
    assert resolve_k(0.1, 5041) == 504
    assert resolve_k(0.29, 100) == 29  # no float truncation surprise
    for bad in (0, 0.0, 1.5, -3):
        with pytest.raises(ValueError):
            resolve_k(bad, 100)
    model = tiny().eval()
    assert model(torch.randn(1, 3, 112, 112), k=0.5)["selected"].shape[1] == 32


def test_gather_pixels_then_embed_equals_embed_then_gather():
    model = tiny().double().eval()
    images = torch.randn(2, 3, 112, 168, dtype=torch.float64)
    sel = model.selector(images, (8, 12))
    keep = model.select(sel["map"], 20)
    a = model.extractor(images, keep, sel["prefix"], gather_pixels=True)
    b = model.extractor(images, keep, sel["prefix"], gather_pixels=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    vit = model.extractor.backbone
    torch.testing.assert_close(embed_selected(vit, images, keep), gather_tokens(embed_all(vit, images), keep), rtol=0, atol=1e-12)


def test_extractor_uses_selector_prefix_not_its_own_tokens():
    model = tiny().eval()
    images = torch.randn(1, 3, 112, 112)
    before = model(images)["cls"]
    with torch.no_grad():
        model.extractor.backbone.cls_token.add_(10.0)
        model.extractor.backbone.reg_token.add_(10.0)
    torch.testing.assert_close(model(images)["cls"], before)
    with torch.no_grad():
        model.selector.backbone.cls_token.add_(1.0)
    assert not torch.allclose(model(images)["cls"], before)


def test_knn_keeps_selected_cells_exact():
    torch.manual_seed(0)
    grid = (6, 9)
    keep = torch.stack([torch.randperm(54)[:11] for _ in range(2)])
    tokens = torch.randn(2, 11, 4)
    out = knn_upsample(tokens, keep, grid)
    torch.testing.assert_close(gather_tokens(out, keep), tokens, rtol=0, atol=0)


def test_knn_is_inverse_distance_convex_combination_of_nearest():
    torch.manual_seed(1)
    grid = (7, 5)
    k = 9
    keep = torch.randperm(35)[:k].unsqueeze(0)
    # one-hot tokens: each output row is the weight vector itself
    weights = knn_upsample(torch.eye(k).unsqueeze(0), keep, grid, knn=5)[0]
    coords = grid_coords(grid)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(35))
    selected = set(keep[0].tolist())
    for cell in range(35):
        if cell in selected:
            continue
        d = (coords[keep[0]] - coords[cell]).norm(dim=1)
        used = (weights[cell] > 0).nonzero().flatten()
        # five of the nearest (ties at the fifth distance may pick either) ...
        assert torch.all(d[used] <= d.sort().values[4] + 1e-6)
        # ... weighted by normalised inverse distance
        w = 1.0 / (d[used] + 1e-8)
        torch.testing.assert_close(weights[cell, used], w / w.sum())
        assert (weights[cell] > 0).sum() == 5  # exactly the five nearest contribute


def test_every_trainable_parameter_gets_a_gradient():
    model = tiny().train()
    images = torch.randn(2, 3, 112, 112)
    out = model(images, k=10, dense=True)
    loss = out["cls"].pow(2).mean() + out["dense"].pow(2).mean() + out["selector_map"].pow(2).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    # the extractor's own prefix tokens are replaced by the selector's: frozen, no gradient
    assert model.extractor.backbone.cls_token.grad is None


def test_full_res_vit_gradients():
    model = tiny("vit").train()
    out = model(torch.randn(2, 3, 112, 112), dense=True)
    (out["cls"].sum() + out["dense"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_pos_embed_resampling_is_identity_at_same_size():
    model = tiny("vit")
    vit = model.backbone
    assert grid_pos_embed(vit, (8, 8)) is vit.pos_embed
    same = resample_abs_pos_embed(vit.pos_embed, new_size=[8, 8], old_size=[8, 8], num_prefix_tokens=0)
    torch.testing.assert_close(same, vit.pos_embed)
    other = grid_pos_embed(vit, (6, 10))
    assert other.shape == (1, 60, 96)


def test_presets_have_dinov2_reg4_shapes():
    cfg = model_config("base")
    assert (cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.reg_tokens, cfg.selector_depth, cfg.selector_img_size) == (
        14,
        768,
        12,
        4,
        3,
        154,
    )
    assert cfg.default_selector_r() == 4  # ceil(37 / 11), as in the official head
    small = model_config("small")
    assert (small.embed_dim, small.num_heads, small.reg_tokens) == (384, 6, 4)
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        model_config("tiy")


def test_base_lookwhere_parameter_count_matches_paper():
    model = LookWhere(model_config("base"))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - 110.7) < 0.5  # paper: 110.7M for ViT-B extractor + 3-block selector


def test_selector_size_keeps_aspect_for_non_square():
    cfg = model_config("base", img_size=[966, 1288])
    assert cfg.selector_size_for((966, 1288)) == (154, 210)
    assert cfg.selector_size_for((518, 518)) == (154, 154)
    # the released code resizes every input to its 154 px square
    assert model_config("base", img_size=[966, 1288], resize_mode="official").selector_size_for((966, 1288)) == (154, 154)


def test_knn_argsort_tie_break_is_the_first_of_a_full_argsort():
    torch.manual_seed(2)
    grid = (7, 5)
    keep = torch.randperm(35)[:9].unsqueeze(0)
    weights = knn_upsample(torch.eye(9).unsqueeze(0), keep, grid, tie_break="argsort")[0]
    dist = torch.cdist(grid_coords(grid), grid_coords(grid)[keep[0]])
    first = dist.argsort(dim=-1)[:, :5]
    for cell in set(range(35)) - set(keep[0].tolist()):
        assert set((weights[cell] > 0).nonzero().flatten().tolist()) == set(first[cell].tolist())
    with pytest.raises(ValueError, match="tie_break must be one of"):
        knn_upsample(torch.eye(9).unsqueeze(0), keep, grid, tie_break="stable")
