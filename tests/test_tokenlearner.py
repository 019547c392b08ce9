"""TokenLearner v1.0 / v1.1, TokenFuser and their insertion into ViT blocks."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import Block

from lw_lightning.models.tokenlearner import (
    TokenFuser,
    TokenLearnerEncoder,
    TokenLearnerV10,
    TokenLearnerV11,
    learn_tokens_per_slice,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_v11_shapes_and_softmax_over_space():
    tl = TokenLearnerV11(dim=32, num_tokens=5)
    x = torch.randn(3, 12, 32)  # 12 tokens: not a square grid, v1.1 accepts it
    z = tl(x)
    assert z.shape == (3, 5, 32)
    maps = tl.last_maps
    assert maps.shape == (3, 5, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 5))  # each token: a distribution over space
    assert not torch.allclose(maps.sum(1), torch.ones(3, 12))  # not a softmax over the S tokens
    # reference written out: transpose [N, L, S] -> [N, S, L] (not a view), softmax over L, raw x
    logits = tl.mlp(tl.norm(x))
    ref = torch.einsum("nsl,nlc->nsc", logits.permute(0, 2, 1).softmax(-1), x)
    torch.testing.assert_close(z, ref)


def test_v11_pools_unnormalised_input():
    tl = TokenLearnerV11(dim=16, num_tokens=4)
    x = torch.randn(2, 9, 16) + 0.5
    # LayerNorm makes the maps scale invariant, so scaling x must scale the pooled tokens
    torch.testing.assert_close(tl(3.0 * x), 3.0 * tl(x), rtol=1e-4, atol=1e-4)


def test_v10_shapes_sigmoid_and_sum_vs_mean_pooling():
    sum_tl = TokenLearnerV10(dim=16, num_tokens=4, use_sum_pooling=True)
    mean_tl = TokenLearnerV10(dim=16, num_tokens=4, use_sum_pooling=False)
    mean_tl.load_state_dict(sum_tl.state_dict())
    x = torch.randn(2, 3 * 5, 16)  # non-square 3x5 grid given explicitly
    z_sum, z_mean = sum_tl(x, grid=(3, 5)), mean_tl(x, grid=(3, 5))
    assert z_sum.shape == (2, 4, 16)
    maps = sum_tl.last_maps
    assert maps.shape == (2, 4, 15) and bool(((maps > 0) & (maps < 1)).all())
    torch.testing.assert_close(z_sum, z_mean * 15)
    torch.testing.assert_close(z_sum, torch.einsum("nsl,nlc->nsc", maps, x))
    # four convs, GELU between them: 3x3 kernels C->S->S->S->S, no bias
    assert [tuple(c.weight.shape) for c in sum_tl.convs] == [(4, 16, 3, 3)] + [(4, 4, 3, 3)] * 3
    assert all(c.bias is None for c in sum_tl.convs)
    # channels-last 4-D input is the same as the flattened one
    torch.testing.assert_close(sum_tl(x.view(2, 3, 5, 16)), z_sum)
    with pytest.raises(ValueError, match="grid"):
        sum_tl(x)  # 15 tokens are not square and no grid was given


def test_v10_maps_are_spatial():
    """The 3x3 convs see neighbours: changing one grid cell changes only nearby map entries."""
    tl = TokenLearnerV10(dim=8, num_tokens=2)
    x = torch.randn(1, 64, 8)
    base = tl.attention_maps(x, (8, 8)).view(2, 8, 8)
    x2 = x.clone()
    x2[0, 0] += 3.0 * torch.randn(8)  # cell (0, 0); a constant shift would vanish in the LayerNorm
    moved = (tl.attention_maps(x2, (8, 8)).view(2, 8, 8) - base).abs().amax(0) > 1e-6
    assert moved[0, 0] and not moved[5:, 5:].any()  # receptive field of four 3x3 convs: 4 cells


def test_fuser_is_zero_at_init_and_trainable():
    fuser = TokenFuser(dim=16, num_tokens=4)
    y, x = torch.randn(2, 4, 16, requires_grad=True), torch.randn(2, 10, 16)
    out = fuser(y, x)
    assert out.shape == (2, 10, 16)
    assert torch.equal(out, torch.zeros_like(out))  # caller adds the residual: identity at start
    (out * torch.randn_like(out)).sum().backward()
    assert fuser.mix.weight.grad.abs().sum() > 0  # the zero-initialised mixing still learns


def _blocks(n: int, dim: int = 16) -> list[Block]:
    return [Block(dim, 2, qkv_bias=True) for _ in range(n)]


def test_encoder_with_fuser_is_identity_over_fused_layers_at_init():
    blocks = _blocks(3)
    enc = TokenLearnerEncoder(blocks, 16, num_tokens=4, loc=1, use_fuser=True)
    assert len(enc.token_learners) == len(enc.fusers) == 2  # one pair per fused layer, not shared
    x = torch.randn(2, 2 * 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, temporal_dims=2, grid=(3, 3)), blocks[0](x))


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_per_slice_tokens_only_see_their_slice(version):
    tl = TokenLearnerV10(16, 3) if version == "v1.0" else TokenLearnerV11(16, 3)
    t, grid = 4, (2, 3)
    x = torch.randn(2, t * 6, 16)  # time-major [B, T*H*W, C]
    z = learn_tokens_per_slice(tl, x, t, grid)
    assert z.shape == (2, t * 3, 16)
    for slice_ in range(t):
        x2 = x.clone()
        x2[:, slice_ * 6 : (slice_ + 1) * 6] += torch.randn(2, 6, 16)
        changed = (learn_tokens_per_slice(tl, x2, t, grid) - z).abs().amax(dim=(0, 2)) > 1e-6
        expect = torch.zeros(t * 3, dtype=torch.bool)
        expect[slice_ * 3 : (slice_ + 1) * 3] = True
        assert torch.equal(changed, expect), f"slice {slice_}: {changed.tolist()}"


def test_encoder_token_counts_and_placement():
    enc = TokenLearnerEncoder(_blocks(4), 16, num_tokens=2, loc=3)
    seen = []
    for b in enc.blocks:
        b.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    out = enc(torch.randn(1, 3 * 16, 16), temporal_dims=3, grid=(4, 4))
    assert seen == [48, 48, 48, 6] and out.shape == (1, 6, 16)  # blocks 0..2 on all tokens
    at_depth = TokenLearnerEncoder(_blocks(2), 16, num_tokens=2, loc=2)  # scenic: index 2 is never reached
    assert at_depth.token_learner is None and not list(at_depth.token_learners)
    x = torch.randn(1, 16, 16)
    torch.testing.assert_close(at_depth(x, 1, (4, 4)), at_depth.blocks[1](at_depth.blocks[0](x)))
    last = TokenLearnerEncoder(_blocks(2), 16, num_tokens=2, loc=2, after_last=True)  # the image GAP variant
    assert last(x, 1, (4, 4)).shape == (1, 2, 16)
    with pytest.raises(ValueError, match="tokenlearner_loc"):
        TokenLearnerEncoder(_blocks(2), 16, num_tokens=2, loc=3)


def test_prefix_tokens_pass_every_block_and_are_not_pooled():
    """Image ViTs keep CLS/registers: TokenLearner replaces only the patch tokens behind them."""
    enc = TokenLearnerEncoder(_blocks(3), 16, num_tokens=4, loc=1)
    seen = []
    for b in enc.blocks:
        b.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    x = torch.randn(2, 2 + 9, 16)  # 2 prefix tokens, a 3x3 grid
    out = enc(x, grid=(3, 3), num_prefix=2)
    assert seen == [11, 6, 6] and out.shape == (2, 6, 16)
    with torch.no_grad():  # the learned tokens come from the patches alone, after block 0
        h = enc.blocks[0](x)
        torch.testing.assert_close(
            enc.blocks[2](enc.blocks[1](torch.cat([h[:, :2], enc.token_learner(h[:, 2:], (3, 3))], 1))), out
        )
    fused = TokenLearnerEncoder(_blocks(2), 16, num_tokens=4, loc=1, use_fuser=True)
    with torch.no_grad():
        y = fused(x, grid=(3, 3), num_prefix=2)
        h = fused.blocks[0](x)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 2:], h[:, 2:])  # fuser identity at init: patches unchanged
    assert not torch.allclose(y[:, :2], h[:, :2])  # the CLS went through block 1 with the S tokens
