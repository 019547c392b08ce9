"""Video LookWhere as pure modules: shapes, space-time top-k with a per-slice quota, gather-before-
embed, the K-NN fill over (t, h, w), teacher init and export, FLOPs, bad configurations."""

from __future__ import annotations

import math

import pytest
import torch

from lw_lightning.config import ConfigError
from lw_lightning.flops import count_flops
from lw_lightning.models.knn_upsample import knn_upsample
from lw_lightning.models.video_lookwhere import (
    VideoLookWhere,
    VideoLookWhereNet,
    embed_tubelets,
    init_from_video_teacher,
    load_video_lookwhere,
    resample_pos_embed_3d,
    save_video_lookwhere,
    topk_tubelets,
    tubelet_pos_embed,
    video_lookwhere_config,
)
from lw_lightning.models.video_teacher import VideoTeacher
from lw_lightning.models.vivit import ViViT, vivit_config

# 8 frames of 32^2, tubelet 2x8x8: a 4x4x4 grid of 64 tubelets; selector 4 frames of 16^2: 2x2x2
TINY = dict(img_size=32, num_frames=8, tubelet=[2, 8, 8], embed_dim=32, depth=3, num_heads=2, selector_depth=1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(**kw) -> VideoLookWhere:
    return VideoLookWhere(video_lookwhere_config("tiny", **{**TINY, **kw})).eval()


def test_shapes_and_defaults():
    m = tiny(k=0.25, reg_tokens=2)
    cfg = m.cfg
    assert cfg.grid == (4, 4, 4) and cfg.selector_grid == (2, 2, 2) and cfg.block == (2, 2, 2) and cfg.num_prefix == 3
    x = torch.randn(2, 3, 8, 32, 32)
    out = m(x, dense=True)
    assert out["cls"].shape == (2, 32) and out["tokens"].shape == (2, 16, 32)
    assert out["selector_map"].shape == (2, 64) and out["selector_map"].dtype == torch.float32
    assert out["selected"].shape == (2, 16) and out["prefix"].shape == (2, 3, 32)
    assert out["dense"].shape == (2, 32, 4, 4, 4)
    # highest score first, no repeats
    scores = out["selector_map"].gather(1, out["selected"])
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    assert all(len(set(row.tolist())) == 16 for row in out["selected"])
    assert m(x, k=5)["tokens"].shape == (2, 5, 32)


def test_selector_map_is_one_logit_per_tubelet_in_t_h_w_order():
    """The sub-tubelet rearrangement puts low-res token (a, b, c)'s block at tubelets
    (2a..2a+1, 2b..2b+1, 2c..2c+1): a head that outputs the token's index shows it."""
    m = tiny()
    sel = m.selector
    with torch.no_grad():
        sel.head.w2.weight.zero_()
        sel.head.w2.bias.copy_(torch.arange(8.0))  # sub-position (i, j, l) -> 4i + 2j + l
    smap = sel(torch.randn(1, 3, 8, 32, 32))["map"].reshape(4, 4, 4)
    t, h, w = torch.meshgrid(torch.arange(4), torch.arange(4), torch.arange(4), indexing="ij")
    torch.testing.assert_close(smap, (4 * (t % 2) + 2 * (h % 2) + (w % 2)).float())


def _brute_quota(scores: torch.Tensor, k: int, slices: int, quota: int) -> set[int]:
    per = scores.numel() // slices
    picked = set()
    for s in range(slices):
        part = scores[s * per : (s + 1) * per]
        picked |= {s * per + int(i) for i in part.argsort(descending=True)[:quota]}
    rest = [int(i) for i in scores.argsort(descending=True) if int(i) not in picked]
    return picked | set(rest[: k - len(picked)])


@pytest.mark.parametrize("quota", [0, 1, 2, 4])
def test_topk_with_per_slice_quota(quota):
    scores = torch.randn(3, 4 * 16)
    scores[:, 48:] -= 10.0  # the last slice scores lowest: plain top-k never picks it
    k = 16
    keep = topk_tubelets(scores, k, slices=4, quota=quota)
    assert keep.shape == (3, k)
    for b in range(3):
        got = set(keep[b].tolist())
        assert got == _brute_quota(scores[b], k, 4, quota)
        per_slice = torch.bincount(keep[b] // 16, minlength=4)
        assert int(per_slice.min()) >= quota
        if quota == 0:
            assert int(per_slice[3]) == 0
        s = scores[b, keep[b]]
        assert torch.all(s[:-1] >= s[1:])  # highest score first


def test_quota_is_used_by_the_model_and_can_be_overridden():
    m = tiny(k=8, slice_quota=2)
    x = torch.randn(2, 3, 8, 32, 32)
    keep = m(x)["selected"]
    assert torch.all(torch.stack([torch.bincount(r // 16, minlength=4) for r in keep]) == 2)  # 8 = 4 slices x 2
    plain = m(x, quota=0)["selected"]
    assert plain.shape == (2, 8)


def test_gather_before_embed_equals_gathering_the_full_embedding():
    m = tiny()
    vivit = m.extractor.vivit
    x = torch.randn(2, 3, 8, 32, 32)
    keep = torch.stack([torch.randperm(64)[:11] for _ in range(2)])
    full = vivit.patch_embed(x) + tubelet_pos_embed(vivit)
    torch.testing.assert_close(embed_tubelets(vivit, x, keep), full.gather(1, keep.unsqueeze(-1).expand(-1, -1, 32)))
    prefix = torch.randn(2, 1, 32)
    torch.testing.assert_close(m.extractor(x, keep, prefix), m.extractor(x, keep, prefix, gather_pixels=False))


def test_extractor_on_kept_tubelets_equals_masking_the_others_in_the_full_sequence():
    """The reference's trick: all tubelets embedded, attention keys of the unselected ones masked.
    Kept tokens and the prefix then come out exactly as when only the kept ones run."""
    m = tiny()
    vivit = m.extractor.vivit
    x = torch.randn(2, 3, 8, 32, 32)
    keep = torch.stack([torch.randperm(64)[:9] for _ in range(2)])
    prefix = m.selector.prefix(2)
    sparse = m.extractor(x, keep, prefix)
    seq = torch.cat([prefix, vivit.patch_embed(x) + tubelet_pos_embed(vivit)], dim=1)
    visible = torch.zeros(2, 65, dtype=torch.bool)
    visible[:, 0] = True
    visible.scatter_(1, keep + 1, True)
    mask = visible[:, None, None, :].expand(2, 1, 65, 65)  # keys only
    for block in vivit.encoder.blocks:
        seq = block(seq, attn_mask=mask)
    seq = vivit.norm(seq)
    torch.testing.assert_close(sparse[:, 0], seq[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse[:, 1:], seq[:, 1:].gather(1, keep.unsqueeze(-1).expand(-1, -1, 32)), atol=1e-5, rtol=1e-5)


def test_knn_fill_over_space_time():
    grid = (3, 4, 5)
    n = math.prod(grid)
    keep = torch.tensor([[0, 17, 33, 59]])
    tokens = torch.randn(1, 4, 6)
    dense = knn_upsample(tokens, keep, grid, knn=1)
    torch.testing.assert_close(dense[0, keep[0]], tokens[0])  # kept cells keep their own token
    coords = torch.cartesian_prod(*(torch.arange(g) for g in grid)).float()
    nearest = torch.cdist(coords, coords[keep[0]]).argmin(1)
    torch.testing.assert_close(dense[0], tokens[0, nearest])  # K=1: the nearest kept tubelet in (t, h, w)
    # K=2 between two kept tubelets one slice apart in time at the same place: the average
    two = knn_upsample(tokens[:, :2], torch.tensor([[0, 40]]), grid, knn=2)  # (0,0,0) and (2,0,0)
    torch.testing.assert_close(two[0, 20], tokens[0, :2].mean(0))  # (1,0,0): equidistant
    m = tiny(k=10)
    out = m(torch.randn(1, 3, 8, 32, 32), dense=True)
    flat = out["dense"].flatten(2).transpose(1, 2)
    torch.testing.assert_close(flat[0, out["selected"][0]], out["tokens"][0])
    assert n == 60


def _teacher(**kw) -> ViViT:
    return ViViT(
        vivit_config(
            "tiny", **{k: TINY[k] for k in ("img_size", "num_frames", "tubelet", "embed_dim", "depth", "num_heads")}, **kw
        ),
        4,
    )


def test_init_from_video_teacher_copies_extractor_and_first_selector_blocks():
    teacher = _teacher()
    m = tiny()
    init_from_video_teacher(m, teacher)
    ext, sel = m.extractor.vivit.state_dict(), m.selector.vivit.state_dict()
    for key, value in teacher.state_dict().items():
        if key.startswith(("patch_embed.", "norm.", "pos_embed", "encoder.blocks.")):
            torch.testing.assert_close(ext[key], value)
    torch.testing.assert_close(sel["encoder.blocks.0.attn.qkv.weight"], teacher.state_dict()["encoder.blocks.0.attn.qkv.weight"])
    assert "encoder.blocks.1.attn.qkv.weight" not in sel  # selector_depth=1
    torch.testing.assert_close(sel["pos_embed"], resample_pos_embed_3d(teacher.pos_embed, (4, 4, 4), (2, 2, 2)))
    # the teacher's features equal the extractor's when every tubelet is kept in order (same weights)
    x = torch.randn(1, 3, 8, 32, 32)
    t = VideoTeacher(teacher)(x)
    keep = torch.arange(64).unsqueeze(0)
    ext_tokens = m.extractor(x, keep, m.selector.prefix(1)[:, :0])  # no prefix: the teacher's own sequence
    torch.testing.assert_close(ext_tokens, t["patch"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="embed_dim"):
        init_from_video_teacher(
            m, ViViT(vivit_config("tiny", img_size=32, num_frames=8, tubelet=[2, 8, 8], embed_dim=16, depth=3, num_heads=2), 4)
        )


def test_export_round_trip_and_strict_load(tmp_path):
    m = tiny()
    path = save_video_lookwhere(m, tmp_path / "vlw.pt")
    other = tiny()
    load_video_lookwhere(other, path)
    x = torch.randn(1, 3, 8, 32, 32)
    torch.testing.assert_close(other(x)["cls"], m(x)["cls"])
    net = VideoLookWhereNet(video_lookwhere_config("tiny", **{**TINY, "pretrained": str(path)}), num_classes=4)
    torch.testing.assert_close(net.lookwhere(x)["cls"], m(x)["cls"])
    assert not any(p.requires_grad for p in net.lookwhere.selector.parameters())
    net.train()
    assert not net.lookwhere.selector.training and net.lookwhere.extractor.training
    with pytest.raises(ConfigError, match="does not fit"):
        load_video_lookwhere(tiny(embed_dim=16, num_heads=2), path)
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="not a video LookWhere export"):
        load_video_lookwhere(m, tmp_path / "bad.pt")


def test_flops_at_32x224_k5_against_vivit_b():
    """ViViT-B/16x2 at 32 x 224^2 (3136 tubelets) vs video LookWhere-B at k = 5% (156 tubelets +
    1 prefix token; selector: 3 blocks on 16 frames of 112^2, 392 tubelets). Numbers in docs/design.md."""
    with torch.device("meta"):
        x = torch.zeros(1, 3, 32, 224, 224)
        full = count_flops(ViViT(vivit_config("base"), 400).eval(), x)
        m = VideoLookWhere(video_lookwhere_config("base")).eval()
        lw = count_flops(m, x, k=0.05)
        sel = count_flops(m.selector, x)
    assert m.cfg.selector_grid == (8, 7, 7) and m.resolve_k(0.05) == 156
    assert full / 2e9 == pytest.approx(451.3, abs=0.1)  # the paper's ViViT-B/16x2: 455 GFLOPs (MACs)
    assert lw / 2e9 == pytest.approx(24.43, abs=0.02)
    assert sel / 2e9 == pytest.approx(10.45, abs=0.02)
    assert full / lw == pytest.approx(18.5, abs=0.05)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(k=0.0), "model.k=0.0: k is a count 1..64 or a fraction in (0, 1] of the 64 tubelets"),
        (dict(k=65), "model.k=65 is more than the 64 patches".replace("patches", "tubelets")),
        (dict(k=1.5), "model.k=1.5"),
        (dict(k=4, slice_quota=2), "model.slice_quota=2 x 4 temporal slices = 8 tubelets is more than model.k = 4 kept"),
        (dict(slice_quota=17), "more than the 16 tubelets of a temporal slice"),
        (dict(slice_quota=-1), "an int >= 0"),
        (dict(selector_img_size=12), "not whole tubelets"),
        (dict(selector_img_size=64), "finer than the extractor's"),
        (dict(num_frames=7), "not whole tubelets"),
        (dict(selector_depth=4), "selector_depth=4 must lie in 1..3"),
        (dict(tubelet=[2, 8]), "model.tubelet must be [t, h, w]"),
        (dict(arch="vit"), "arch 'lookwhere'"),
    ],
)
def test_bad_configs_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        video_lookwhere_config("tiny", **{**TINY, **overrides})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_option_and_bad_input_shape():
    with pytest.raises(ConfigError, match="unknown video LookWhere option"):
        video_lookwhere_config("tiny", kk=3)
    with pytest.raises(ValueError, match=r"expects clips \[B, 3, T, H, W\] = \[B, 3, 8, 32, 32\]"):
        tiny()(torch.randn(1, 3, 6, 32, 32))
    with pytest.raises(ConfigError, match="k=70"):
        tiny().resolve_k(70)


def test_video_teacher_targets_and_attention_block():
    from lw_lightning.models.teacher import attention_target

    teacher = _teacher()
    x = torch.randn(2, 3, 8, 32, 32)
    out = VideoTeacher(teacher)(x)
    feats = teacher.forward_features(x)
    torch.testing.assert_close(out["patch"], feats)
    torch.testing.assert_close(out["cls"], feats.mean(1))  # a gap teacher: its head reads the mean
    seq = teacher.patch_embed(x) + teacher.pos_embed
    seq = teacher.encoder.blocks[0](seq)
    torch.testing.assert_close(
        VideoTeacher(teacher, attn_block=1)(x)["attn"], attention_target(teacher.encoder.blocks[1], seq, 0)
    )
    assert out["attn"].shape == (2, 64)
    with pytest.raises(ConfigError, match="attn_block=3"):
        VideoTeacher(teacher, attn_block=3)
    with pytest.raises(ConfigError, match="attn_query=cls needs a ViViT with a CLS token"):
        VideoTeacher(teacher, attn_query="cls")
    with pytest.raises(ConfigError, match="without TokenLearner"):
        VideoTeacher(
            ViViT(vivit_config("tiny", img_size=32, num_frames=8, tubelet=[2, 8, 8], num_tokens=2, tokenlearner_loc=1), 4)
        )
