"""ViViT: tubelet embedding and its image-ViT initialisation, TokenLearner per slice, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from lw_lightning.models.video_checkpoint import vivit_with_weights
from lw_lightning.models.vivit import ViViT, inflate_patch_kernel, load_image_vit, vivit_config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("t", [2, 3, 4])
def test_central_frame_init_equals_2d_conv_on_central_frame(t):
    w2d, bias = torch.randn(6, 3, 4, 4), torch.randn(6)
    w3d = inflate_patch_kernel(w2d, t, "central")
    video = torch.randn(2, 3, 4 * t, 8, 8)
    out3d = F.conv3d(video, w3d, bias, stride=(t, 4, 4))
    central = video[:, :, t // 2 :: t]  # frame t//2 of every tubelet (index 1 for t=2)
    out2d = torch.stack([F.conv2d(central[:, :, i], w2d, bias, stride=4) for i in range(4)], dim=2)
    torch.testing.assert_close(out3d, out2d)


def test_average_init_equals_mean_of_2d_convs():
    w2d = torch.randn(6, 3, 4, 4)
    video = torch.randn(1, 3, 4, 8, 8)
    out3d = F.conv3d(video, inflate_patch_kernel(w2d, 2, "average"), stride=(2, 4, 4))
    frames = [F.conv2d(video[:, :, i], w2d, stride=4) for i in range(4)]
    expect = torch.stack([(frames[0] + frames[1]) / 2, (frames[2] + frames[3]) / 2], dim=2)
    torch.testing.assert_close(out3d, expect)


def test_tubelet_tokens_are_time_major():
    model = ViViT(vivit_config("tiny"), 3)
    video = torch.zeros(1, 3, 8, 32, 32)
    base = model.patch_embed(video)
    video[:, :, 6:8, 8:16, 0:8] = 1.0  # tubelet slice 3, row 1, column 0
    changed = ((model.patch_embed(video) - base).abs().sum(-1) > 0).nonzero()[:, 1].tolist()
    assert changed == [3 * 16 + 1 * 4 + 0]


def _image_vit(depth: int = 4, class_token: bool = True) -> VisionTransformer:
    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=depth,
        num_heads=4,
        num_classes=0,
        class_token=class_token,
        global_pool="token" if class_token else "avg",
    )


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_init_from_local_image_vit_file(tmp_path, fmt):
    vit = _image_vit()
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    path = tmp_path / f"vit.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save({"model": state}, path)
    model = vivit_with_weights(vivit_config("tiny", num_tokens=4, pretrained=str(path)), 5)
    w = model.patch_embed.proj.weight
    torch.testing.assert_close(w[:, :, 1], state["patch_embed.proj.weight"])  # central frame of t=2
    assert torch.count_nonzero(w[:, :, 0]) == 0
    spatial = state["pos_embed"][:, 1:]  # CLS position dropped
    for t in range(4):  # tiled over the 4 temporal slices
        torch.testing.assert_close(model.pos_embed[:, t * 16 : (t + 1) * 16], spatial)
    torch.testing.assert_close(model.encoder.blocks[3].mlp.fc2.weight, state["blocks.3.mlp.fc2.weight"])
    torch.testing.assert_close(model.norm.weight, state["norm.weight"])


def test_init_resamples_posemb_and_reports_unused(tmp_path):
    vit = VisionTransformer(img_size=64, patch_size=8, embed_dim=64, depth=6, num_heads=4, num_classes=0)
    cfg = vivit_config("tiny", variant="factorised", embed_init="average")
    model = ViViT(cfg, 5)
    report = load_image_vit(model, vit.state_dict())
    assert model.pos_embed.shape == (1, 16, 64)  # 8x8 image grid resampled to the 4x4 grid
    assert "blocks.5.attn.qkv.weight" in report["skipped"]  # deeper than the video model
    assert "cls_token" in report["skipped"]
    torch.testing.assert_close(model.patch_embed.proj.weight.sum(2), vit.patch_embed.proj.weight.detach())
    with pytest.raises(ValueError, match="embed_dim"):
        load_image_vit(ViViT(vivit_config("tiny", embed_dim=32, num_heads=2), 5), vit.state_dict())
    with pytest.raises(FileNotFoundError):
        vivit_with_weights(vivit_config("tiny", pretrained=str(tmp_path / "nope.pth")), 5)


def test_tokenlearner_tokens_of_slice_t_come_from_frames_of_slice_t():
    model = ViViT(vivit_config("tiny", num_tokens=3, tokenlearner_loc=0), 5).eval()
    captured = []
    model.encoder.blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    video = torch.randn(1, 3, 8, 32, 32)
    model(video)
    assert captured[0].shape == (1, 4 * 3, 64)  # nt=4 slices x 3 tokens
    for t in range(4):
        v2 = video.clone()
        v2[:, :, 2 * t : 2 * t + 2] = torch.randn(1, 3, 2, 32, 32)  # the 2 frames of tubelet slice t
        model(v2)
        changed = (captured[-1] - captured[0]).abs().amax(dim=(0, 2)) > 1e-6
        assert changed.nonzero().flatten().tolist() == [3 * t, 3 * t + 1, 3 * t + 2]


@pytest.mark.parametrize(
    "options",
    [
        dict(num_tokens=0),
        dict(num_tokens=4, tokenlearner_loc=2),
        dict(num_tokens=4, tokenlearner_loc=2, tokenlearner_version="v1.0"),
        dict(variant="factorised", num_tokens=4),
        dict(variant="factorised", num_tokens=0),
        dict(classifier="token"),
        dict(classifier="token", num_tokens=4, tokenlearner_loc=2),
        dict(variant="factorised", classifier="token"),
        dict(variant="factorised", classifier="token", num_tokens=4, tokenlearner_loc=2),
    ],
    ids=[
        "joint",
        "joint-tl11",
        "joint-tl10",
        "factorised-tl",
        "factorised",
        "token",
        "token-tl",
        "factorised-token",
        "factorised-token-tl",
    ],
)
def test_every_parameter_gets_a_gradient(options):
    model = ViViT(vivit_config("tiny", **options), 5)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # zero-init head: nothing below it would get a gradient
    logits = model(torch.randn(2, 3, 8, 32, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not no_grad


def test_fuser_variant_starts_as_the_plain_stack_below_loc():
    model = ViViT(vivit_config("tiny", num_tokens=4, tokenlearner_loc=2, use_fuser=True), 5).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    tokens = model.patch_embed(x) + model.pos_embed
    with torch.no_grad():
        plain = model.encoder.blocks[1](model.encoder.blocks[0](tokens))
        torch.testing.assert_close(model.encoder(tokens, 4, (4, 4)), plain)
    assert model.num_output_tokens == 64


def test_presets_and_bad_options():
    base = vivit_config("base", num_tokens=8, tokenlearner_loc=6)
    assert base.grid == (16, 14, 14) and base.embed_dim == 768 and base.depth == 12
    assert vivit_config("large").depth == 24
    with pytest.raises(ValueError, match="preset"):
        vivit_config("huge")
    with pytest.raises(ValueError, match="larger than the input"):
        vivit_config("tiny", num_frames=1)
    with pytest.raises(ValueError, match="classifier"):
        vivit_config("tiny", classifier="cls")
    with pytest.raises(ValueError, match="activation"):
        vivit_config("tiny", activation="relu")
    with pytest.raises(ValueError, match="tokenlearner_loc below 4"):
        vivit_config("tiny", variant="factorised", classifier="token", num_tokens=2)
    with pytest.raises(ValueError, match="variant"):
        vivit_config("tiny", variant="model3")
    with pytest.raises(ValueError, match=r"\[B, 8, 32, 32\]"):
        ViViT(vivit_config("tiny"), 3)(torch.randn(1, 3, 4, 32, 32))


# ------------------------------------------------------------------------------------------------
# fidelity to scenic: classifier, activation, Model 2 pooling, VALID tubelets, loc = depth, init
# ------------------------------------------------------------------------------------------------


def _manual_joint(model: ViViT, video: torch.Tensor) -> torch.Tensor:
    """Model 1 written out from its parts (not through ViViT.forward): [CLS; tokens] + posemb ->
    blocks -> final norm -> CLS (token) or mean (gap) -> head."""
    x = model.patch_embed.proj(video).flatten(2).transpose(1, 2)
    if model.cfg.classifier == "token":
        x = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + model.pos_embed
    for block in model.encoder.blocks:
        x = block(x)
    x = model.norm(x)
    return model.head(x[:, 0] if model.cfg.classifier == "token" else x.mean(1))


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_classifier_token_reads_the_cls_after_the_final_norm(classifier):
    model = ViViT(vivit_config("tiny", classifier=classifier), 5).eval()
    torch.nn.init.normal_(model.head.weight)
    nt, nh, nw = model.cfg.grid
    assert model.pos_embed.shape == (1, (classifier == "token") + nt * nh * nw, 64)
    if classifier == "token":
        assert torch.count_nonzero(model.cls_token) == 0  # zero init, as scenic / HF
        torch.nn.init.normal_(model.cls_token)
    else:
        assert not hasattr(model, "cls_token")
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(video), _manual_joint(model, video), rtol=0, atol=1e-6)


def test_activation_is_tanh_gelu_by_default_and_selectable():
    tanh = ViViT(vivit_config("tiny", variant="factorised"), 3)
    acts = {
        type(m.mlp.act).__name__ + m.mlp.act.approximate for m in tanh.modules() if hasattr(m, "mlp") and hasattr(m.mlp, "act")
    }
    assert acts == {"GELUtanh"}
    exact = ViViT(vivit_config("tiny", activation="gelu"), 3)
    assert {m.mlp.act.approximate for m in exact.encoder.blocks} == {"none"}
    x = torch.linspace(-4, 4, 101)
    block = tanh.encoder.blocks[0].mlp.act
    torch.testing.assert_close(block(x), 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3))))
    exact.set_activation("gelu_tanh")
    assert exact.cfg.activation == "gelu_tanh" and {m.mlp.act.approximate for m in exact.encoder.blocks} == {"tanh"}


def test_model2_takes_the_layernorm_then_the_mean():
    """scenic SpaceTimeViViT, classifier='gap': encoder_norm over each slice's tokens, then their mean."""
    model = ViViT(vivit_config("tiny", variant="factorised"), 5).eval()
    for norm in (model.spatial_norm, model.norm):  # non-trivial norms: LN(mean) and mean(LN) then differ
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    captured = []
    model.temporal_encoder.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        model(video)
        x = model.patch_embed.proj(video).flatten(2).transpose(1, 2).reshape(2 * 4, 16, 64) + model.pos_embed
        for block in model.encoder.blocks:
            x = block(x)
        per_slice = model.spatial_norm(x).mean(1)  # norm first, then the mean
        expect = (per_slice.reshape(2, 4, 1, 64) + model.time_embed).reshape(2, 4, 64)
        torch.testing.assert_close(captured[0], expect, rtol=0, atol=1e-6)
        old_order = (model.spatial_norm(x.mean(1)).reshape(2, 4, 1, 64) + model.time_embed).reshape(2, 4, 64)
        assert (old_order - captured[0]).abs().max() > 1e-2


def test_tubelet_remainder_is_dropped_as_valid_padding():
    cfg = vivit_config("tiny", num_frames=9, img_size=36)  # 9 frames / t=2, 36 px / 8: 1 frame and 4 px left over
    assert cfg.grid == (4, 4, 4)
    model = ViViT(cfg, 5).eval()
    torch.nn.init.normal_(model.head.weight)
    video = torch.randn(1, 3, 9, 36, 36)
    cropped = torch.zeros_like(video)
    cropped[:, :, :8, :32, :32] = video[:, :, :8, :32, :32]  # only the whole tubelets
    with torch.no_grad():
        torch.testing.assert_close(model(video), model(cropped), rtol=0, atol=0)
    assert vivit_config("base", tubelet=[2, 10, 10]).grid == (16, 22, 22)  # the paper's L/10 at 224


def test_tokenlearner_loc_equal_to_depth_applies_none_in_model1():
    """scenic's EncoderMod inserts TokenLearner where ``lyr == tokenlearner_loc``: never for loc = depth."""
    torch.manual_seed(0)
    with_loc = ViViT(vivit_config("tiny", num_tokens=4, tokenlearner_loc=4), 5)
    torch.manual_seed(0)
    plain = ViViT(vivit_config("tiny"), 5)
    assert with_loc.state_dict().keys() == plain.state_dict().keys()  # no TokenLearner parameters
    assert with_loc.num_output_tokens == 64
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_loc.forward_features(video), plain.forward_features(video))


def test_blocks_from_scratch_get_scenic_init():
    torch.manual_seed(0)
    d = 192
    model = ViViT(vivit_config("tiny", embed_dim=d, num_heads=3, depth=2), 5)
    block = model.encoder.blocks[0]
    bound = (6 / (d + d)) ** 0.5  # xavier-uniform of each [D, D] q / k / v kernel (flax fans)
    for part in block.attn.qkv.weight.chunk(3):
        assert part.abs().max() <= bound and abs(part.std().item() - bound / 3**0.5) < 0.05 * bound
    assert torch.count_nonzero(block.attn.qkv.bias) == 0 and torch.count_nonzero(block.attn.proj.bias) == 0
    mlp_bound = (6 / (d + 4 * d)) ** 0.5
    assert block.mlp.fc1.weight.abs().max() <= mlp_bound
    assert abs(block.mlp.fc1.weight.std().item() - mlp_bound / 3**0.5) < 0.05 * mlp_bound
    assert 0 < block.mlp.fc1.bias.std().item() < 3e-6 and 0 < block.mlp.fc2.bias.std().item() < 3e-6  # N(0, 1e-6)
    w = model.patch_embed.proj.weight  # flax Conv default: lecun normal (truncated at 2 sigma), zero bias
    fan_in = w[0].numel()
    assert w.abs().max() <= 2 * (1 / fan_in) ** 0.5 / 0.8796 + 1e-6
    assert abs(w.std().item() - (1 / fan_in) ** 0.5) < 0.05 * (1 / fan_in) ** 0.5
    assert torch.count_nonzero(model.patch_embed.proj.bias) == 0


def test_image_vit_init_copies_the_cls_token_and_its_position():
    vit = _image_vit()
    torch.nn.init.normal_(vit.cls_token)
    state = vit.state_dict()
    model = ViViT(vivit_config("tiny", classifier="token"), 5)
    report = load_image_vit(model, state)
    assert "cls_token" in report["loaded"]
    torch.testing.assert_close(model.cls_token, state["cls_token"])
    torch.testing.assert_close(model.pos_embed[:, :1], state["pos_embed"][:, :1])
    torch.testing.assert_close(model.pos_embed[:, 1:17], state["pos_embed"][:, 1:])
    no_cls = _image_vit(class_token=False)  # a CLS-free image ViT: the video CLS keeps its init
    model2 = ViViT(vivit_config("tiny", classifier="token"), 5)
    before = model2.pos_embed[:, :1].detach().clone()
    load_image_vit(model2, no_cls.state_dict())
    torch.testing.assert_close(model2.pos_embed[:, :1], before)
