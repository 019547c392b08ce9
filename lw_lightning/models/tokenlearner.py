"""TokenLearner (v1.0 and v1.1), TokenFuser, and their insertion into a stack of ViT blocks.

Follows scenic's ``projects/token_learner/model.py`` (current form), channels-last:

* v1.0: ``LN(x)`` -> four 3×3 convs C→S→S→S→S (GELU after the first three) -> sigmoid maps
  ``[N, S, HW]`` -> weighted **sum** over space of the *un-normalised* ``x`` (mean optional).
* v1.1: ``LN(x)`` -> MLP C→64→S -> softmax **over space** per token -> ``A @ x``.
* TokenFuser: ``LN2(Dense_S→S(LN1(y)ᵀ)ᵀ)`` with the dense zero-initialised, masked back onto the
  grid by ``sigmoid(MLP(LN(x)))``; the caller adds the residual, so a fused unit starts as identity.

LayerNorm eps is 1e-6 and GELU is the tanh form, as flax defaults (pitfalls P4, P7).
Video: the token sequence is time-major ``(t, h, w)``; TokenLearner runs on ``[B·T, HW, C]`` so each
temporal slice gets its own S tokens (P8), giving ``[B, T·S, C]``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _no_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """Disable autocast around fp32 pooling; meta tensors (FLOP counting) have no autocast."""
    if x.device.type in ("cpu", "cuda", "xpu"):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


LN_EPS = 1e-6
LayerNorm = partial(nn.LayerNorm, eps=LN_EPS)
VERSIONS = ("v1.0", "v1.1")


def _gelu(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


class MlpBlock(nn.Module):
    """Dense → GELU → Dropout → Dense → Dropout, xavier-uniform kernels and N(0, 1e-6) biases
    (scenic ``MlpBlock`` init, so TokenLearner / TokenFuser start from the same statistics)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.drop = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(_gelu(self.fc1(x)))))


class TokenLearnerV10(nn.Module):
    """TokenLearner v1.0 (the paper's module): conv attention maps with sigmoid, sum pooling.

    ``forward(x, grid)`` takes ``[N, H·W, C]`` with ``grid=(H, W)`` (any rectangle; scenic itself
    only accepts squares) or ``[N, H, W, C]``, and returns ``[N, S, C]``. ``last_maps`` keeps the
    ``[N, S, H·W]`` attention maps of the latest call for visualisation.
    """

    def __init__(self, dim: int, num_tokens: int, use_sum_pooling: bool = True) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.use_sum_pooling = use_sum_pooling
        self.norm = LayerNorm(dim)
        chans = [dim, num_tokens, num_tokens, num_tokens, num_tokens]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in itertools.pairwise(chans))
        for conv in self.convs:  # flax lecun_normal: truncated normal, variance 1/fan_in
            std = math.sqrt(1.0 / (conv.in_channels * 9)) / 0.87962566103423978
            nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
        self.last_maps: Tensor | None = None

    def attention_maps(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        n, _hw, c = x.shape
        h, w = grid
        a = self.norm(x).transpose(1, 2).reshape(n, c, h, w)
        for i, conv in enumerate(self.convs):
            a = conv(a)
            if i < len(self.convs) - 1:
                a = _gelu(a)
        return torch.sigmoid(a.flatten(2))  # [N, S, HW]: no normalisation across space

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        if x.ndim == 4:
            grid = (x.shape[1], x.shape[2])
            x = x.flatten(1, 2)
        if grid is None:
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise ValueError(f"TokenLearner v1.0 needs grid=(H, W) for {x.shape[1]} non-square tokens")
            grid = (side, side)
        if grid[0] * grid[1] != x.shape[1]:
            raise ValueError(f"grid {grid} does not match {x.shape[1]} tokens")
        maps = self.attention_maps(x, grid)
        self.last_maps = maps.detach()
        # sum pooling over H·W positions of the raw x can exceed fp16's range: pool in fp32
        with _no_autocast(x):
            out = torch.einsum("nsl,nlc->nsc", maps.float(), x.float())  # pools the raw, un-normalised x (P4)
        if not self.use_sum_pooling:
            out = out / x.shape[1]
        return out


class TokenLearnerV11(nn.Module):
    """TokenLearner v1.1: MLP attention maps with a softmax over space; ``[N, L, C] -> [N, S, C]``.

    Any token count L is accepted (non-square grids). ``last_maps`` keeps the ``[N, S, L]`` maps.
    """

    def __init__(self, dim: int, num_tokens: int, bottleneck_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.norm = LayerNorm(dim)
        self.mlp = MlpBlock(dim, bottleneck_dim, num_tokens, dropout)
        self.last_maps: Tensor | None = None

    def attention_maps(self, x: Tensor) -> Tensor:
        logits = self.mlp(self.norm(x))  # [N, L, S]
        return logits.transpose(1, 2).softmax(dim=-1)  # transpose, not view (P3); softmax over L (P2)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        if x.ndim == 4:
            x = x.flatten(1, 2)
        maps = self.attention_maps(x)
        self.last_maps = maps.detach()
        with _no_autocast(x):  # pooling in fp32 under mixed precision
            return maps.float() @ x.float()


class TokenFuser(nn.Module):
    """Maps S learned tokens ``y [N, S, C]`` back onto the original ``x [N, L, C]`` grid.

    Returns ``[N, L, C]``; the caller adds ``x`` as residual. Exactly zero at initialisation.
    """

    def __init__(
        self, dim: int, num_tokens: int, bottleneck_dim: int = 64, dropout: float = 0.0, use_normalization: bool = True
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim) if use_normalization else nn.Identity()
        self.mix = nn.Linear(num_tokens, num_tokens)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)
        self.norm2 = LayerNorm(dim) if use_normalization else nn.Identity()
        self.norm_x = LayerNorm(dim)
        self.mask = MlpBlock(dim, bottleneck_dim, num_tokens, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        y = self.norm1(y)
        y = self.mix(y.transpose(1, 2)).transpose(1, 2)  # token mixing with an S×S matrix
        y = self.norm2(y)
        mask = torch.sigmoid(self.mask(self.norm_x(x)))  # [N, L, S]
        return self.drop(mask @ y)


def build_token_learner(version: str, dim: int, num_tokens: int, dropout: float = 0.0, use_sum_pooling: bool = True) -> nn.Module:
    """``"v1.1"`` (default in scenic's encoders) or ``"v1.0"`` (the paper's module)."""
    if version == "v1.1":
        return TokenLearnerV11(dim, num_tokens, dropout=dropout)
    if version == "v1.0":
        return TokenLearnerV10(dim, num_tokens, use_sum_pooling=use_sum_pooling)
    raise ValueError(f"unknown TokenLearner version {version!r}; choose from {VERSIONS}")


def learn_tokens_per_slice(tl: nn.Module, x: Tensor, temporal_dims: int, grid: tuple[int, int]) -> Tensor:
    """``[B, T·HW, C]`` (time-major) -> ``[B·T, HW, C]`` -> TokenLearner -> ``[B, T·S, C]``.

    Tokens ``t·S … (t+1)·S-1`` of the output are computed from slice ``t`` alone.
    """
    b, n, c = x.shape
    if n != temporal_dims * grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not form {temporal_dims} slices of a {grid} grid")
    z = tl(x.reshape(b * temporal_dims, grid[0] * grid[1], c), grid)
    return z.reshape(b, temporal_dims * z.shape[1], c)


class TokenLearnerEncoder(nn.Module):
    """A stack of ViT blocks with TokenLearner inserted before block ``loc`` (scenic ``EncoderMod``)
    or, with ``use_fuser``, TokenLearner → block → TokenFuser at every block ≥ ``loc``
    (``EncoderModFuser``, each layer with its own modules). ``num_tokens=0`` disables both.

    ``loc = L`` means blocks ``0 … L-1`` see all tokens. ``loc = len(blocks)`` follows scenic
    (``lyr == tokenlearner_loc`` never holds): no TokenLearner is built or applied, unless
    ``after_last`` asks for one after the last block (the image TokenLearner-ViT's GAP variant).
    No positional embedding is re-added after TokenLearner (P11).
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        dim: int,
        num_tokens: int = 0,
        loc: int | None = None,
        version: str = "v1.1",
        use_fuser: bool = False,
        dropout: float = 0.0,
        use_sum_pooling: bool = True,
        after_last: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        depth = len(self.blocks)
        self.loc = depth // 2 if loc is None else loc
        if num_tokens > 0 and not 0 <= self.loc <= depth:
            raise ValueError(f"tokenlearner_loc={self.loc} must lie in [0, {depth}] for {depth} blocks")
        if use_fuser and num_tokens > 0 and self.loc == depth and after_last:
            raise ValueError("use_fuser needs tokenlearner_loc < depth (the fuser wraps blocks)")
        if self.loc == depth and not after_last:
            num_tokens = 0  # scenic: TokenLearner at index depth is never reached
        self.num_tokens = num_tokens
        self.use_fuser = use_fuser and num_tokens > 0
        make = partial(build_token_learner, version, dim, num_tokens, dropout, use_sum_pooling)
        self.token_learner: nn.Module | None = None
        self.token_learners = nn.ModuleList()
        self.fusers = nn.ModuleList()
        if num_tokens > 0 and self.use_fuser:
            self.token_learners.extend(make() for _ in range(self.loc, depth))
            self.fusers.extend(TokenFuser(dim, num_tokens, dropout=dropout) for _ in range(self.loc, depth))
        elif num_tokens > 0:
            self.token_learner = make()

    def output_tokens(self, num_tokens_in: int, temporal_dims: int) -> int:
        """Token count this encoder outputs for a given input."""
        if self.num_tokens > 0 and not self.use_fuser:
            return temporal_dims * self.num_tokens
        return num_tokens_in

    def forward(self, x: Tensor, temporal_dims: int = 1, grid: tuple[int, int] | None = None, num_prefix: int = 0) -> Tensor:
        """``x``: ``[B, P + T·H·W, C]``, P prefix tokens (CLS, registers) then the patch tokens in
        (t, h, w) order; ``grid=(H, W)`` (square assumed if None).

        Prefix tokens pass through every block and are never pooled: TokenLearner replaces only
        the patch tokens, giving ``[B, P + T·S, C]`` from block ``loc`` on.
        """
        if self.num_tokens > 0 and grid is None:
            side = math.isqrt((x.shape[1] - num_prefix) // temporal_dims)
            grid = (side, side)
        for i, block in enumerate(self.blocks):
            if self.num_tokens > 0 and i >= self.loc:
                if self.use_fuser:
                    x = self._fused(i - self.loc, block, x, temporal_dims, grid, num_prefix)  # type: ignore[arg-type]
                    continue
                if i == self.loc:
                    x = self._learn(x, temporal_dims, grid, num_prefix)  # type: ignore[arg-type]
            x = block(x)
        if self.token_learner is not None and self.loc == len(self.blocks):
            x = self._learn(x, temporal_dims, grid, num_prefix)  # type: ignore[arg-type]
        return x

    def _learn(self, x: Tensor, t: int, grid: tuple[int, int], p: int) -> Tensor:
        z = learn_tokens_per_slice(self.token_learner, x[:, p:], t, grid)  # type: ignore[arg-type]
        return torch.cat([x[:, :p], z], dim=1) if p else z

    def _fused(self, j: int, block: nn.Module, x: Tensor, t: int, grid: tuple[int, int], p: int = 0) -> Tensor:
        b, n, c = x.shape
        patches = n - p
        residual = x[:, p:].reshape(b * t, patches // t, c)
        y = block(torch.cat([x[:, :p], learn_tokens_per_slice(self.token_learners[j], x[:, p:], t, grid)], dim=1))
        fused = self.fusers[j](y[:, p:].reshape(b * t, self.num_tokens, c), residual) + residual
        return torch.cat([y[:, :p], fused.reshape(b, patches, c)], dim=1)
