"""LookWhere (selector + extractor) and its full-resolution ViT baseline, as pure ``nn.Module``s.

Data flow (Fuller et al., 2025; official ``modeling.py``):

    image (B,3,H,W) --bilinear resize--> low-res copy --Selector ViT--> CLS+registers, tokens
    tokens --SelectorHead (D -> 4D -> r²)--> r×r sub-patch logits per token --bilinear--> map (B, N)
    keep = top-k(map)                       (hard, descending; no gradient through the indices)
    Extractor ViT on [selector CLS+registers ; embed(pixels[keep]) + pos[keep]]
    -> CLS features, k patch features --K-NN inverse distance--> dense features on the grid.

``model.resize_mode`` picks the resize semantics: "pretraining" (the JAX pretraining: antialiased
resizes) or "official" (the released PyTorch inference code: none antialiased, a square selector
input, its pos-embed resampling and K-NN tie-break); see :class:`~.config.ModelConfig`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import ModelConfig, resolve_k
from .knn_upsample import knn_upsample
from .tokenlearner_vit import TokenLearnerViT
from .vit import (
    create_vit,
    embed_all,
    embed_selected,
    gather_tokens,
    grid_pos_embed,
    patch_grid,
    prefix_tokens,
    run_blocks,
    to_size2,
    vit_from_config,
)


class SelectorHead(nn.Module):
    """Per-token MLP ``D -> 4D -> r²`` predicting an r×r block of sub-patch logits.

    Parameter names ``w1``/``w2`` follow the official checkpoint.
    """

    def __init__(self, dim: int, r: int, hidden_ratio: int = 4) -> None:
        super().__init__()
        self.r = r
        self.w1 = nn.Linear(dim, hidden_ratio * dim)
        self.w2 = nn.Linear(hidden_ratio * dim, r * r)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.w2(F.gelu(self.w1(tokens)))


class Selector(nn.Module):
    """Shallow ViT on a low-res copy of the image that predicts one logit per high-res patch."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        lo = cfg.selector_size_for(tuple(cfg.img_size))  # type: ignore[arg-type]
        self.backbone = create_vit(
            img_size=lo,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.selector_depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            reg_tokens=cfg.reg_tokens,
            init_values=cfg.init_values,
        )
        self.num_prefix = self.backbone.num_prefix_tokens
        self.head = SelectorHead(cfg.embed_dim, cfg.selector_r or cfg.default_selector_r())

    def forward(self, images: Tensor, grid: tuple[int, int]) -> dict[str, Tensor]:
        """Return ``map`` (B, gh*gw) logits, ``prefix`` (B, P, D) and low-res ``tokens``."""
        lo = self.cfg.selector_size_for((images.shape[-2], images.shape[-1]))
        aa = self.cfg.antialias
        x = F.interpolate(images, size=lo, mode="bilinear", align_corners=False, antialias=aa)
        vit = self.backbone
        lo_grid = patch_grid(vit, lo)
        patches = embed_all(vit, x) + grid_pos_embed(vit, lo_grid, antialias=aa)
        out = run_blocks(vit, prefix_tokens(vit, x.shape[0]), patches)
        prefix, tokens = out[:, : self.num_prefix], out[:, self.num_prefix :]
        r = self.head.r
        sub = self.head(tokens)  # (B, gh_lo*gw_lo, r*r)
        b = sub.shape[0]
        # 'b (h w) (i j) -> b 1 (h i) (w j)'
        sub = sub.reshape(b, lo_grid[0], lo_grid[1], r, r).permute(0, 1, 3, 2, 4)
        sub = sub.reshape(b, 1, lo_grid[0] * r, lo_grid[1] * r)
        # fp32 map under mixed precision: stable top-k and map loss, and the antialiased resize has
        # no bf16 backward on CPU
        smap = F.interpolate(sub.float(), size=grid, mode="bilinear", align_corners=False, antialias=aa)
        return {"map": smap.flatten(1), "prefix": prefix, "tokens": tokens}


class Extractor(nn.Module):
    """Full-depth ViT that sees only the selected high-res patches plus the selector's prefix.

    Its own CLS/register parameters are kept (so official checkpoints load strictly) but unused:
    the selector's output CLS and registers replace them; they are therefore frozen.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = vit_from_config(cfg)
        for p in (self.backbone.cls_token, self.backbone.reg_token):
            if p is not None:
                p.requires_grad_(False)
        self.num_prefix = self.backbone.num_prefix_tokens

    def forward(
        self, images: Tensor, keep: Tensor, prefix: Tensor, gather_pixels: bool = True, token_scale: Tensor | None = None
    ) -> Tensor:
        """Run on the patches ``keep`` (B, k) of ``images``; returns (B, P + k, D) after the norm.

        ``gather_pixels=False`` embeds every patch and gathers afterwards (reference behaviour,
        kept for tests and benchmarks). ``token_scale`` (B, k) multiplies the input tokens (the
        straight-through gate: 1 in value, carries the selector's gradient).
        """
        vit = self.backbone
        grid = patch_grid(vit, (images.shape[-2], images.shape[-1]))
        pos = grid_pos_embed(vit, grid, antialias=self.cfg.antialias).expand(images.shape[0], -1, -1)
        if gather_pixels:
            patches = embed_selected(vit, images, keep) + gather_tokens(pos, keep)
        else:
            patches = gather_tokens(embed_all(vit, images) + pos, keep)
        if token_scale is not None:
            patches = patches * token_scale.unsqueeze(-1).to(patches.dtype)
        return run_blocks(vit, prefix, patches)


class LookWhere(nn.Module):
    """Selector + top-k + extractor. ``forward`` returns a dict of features (no task head)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.arch != "lookwhere":
            raise ValueError("LookWhere needs model.arch=lookwhere")
        self.cfg = cfg
        self.selector = Selector(cfg)
        self.extractor = Extractor(cfg)
        self.embed_dim = cfg.embed_dim
        self.num_prefix = self.extractor.num_prefix

    def grid(self, images: Tensor) -> tuple[int, int]:
        return patch_grid(self.extractor.backbone, (images.shape[-2], images.shape[-1]))

    def select(self, selector_map: Tensor, k: int | float | None = None) -> Tensor:
        """Hard top-k of the selector map, highest score first: (B, k) flat indices."""
        n = selector_map.shape[1]
        kk = resolve_k(self.cfg.k if k is None else k, n)
        return selector_map.topk(kk, dim=1, sorted=True).indices

    def forward(
        self,
        images: Tensor,
        k: int | float | None = None,
        dense: bool = False,
        keep: Tensor | None = None,
        gate: bool = False,
    ) -> dict[str, Tensor]:
        """Features of ``images`` (B,3,H,W), H and W multiples of the patch size.

        Args:
            k: patches to keep (count or fraction); default ``cfg.k``.
            dense: also return ``dense`` (B, D, gh, gw) K-NN-filled features.
            keep: use these (B, k) indices instead of the selector's top-k.
            gate: straight-through top-k gate, ``1 + σ(s) − sg(σ(s))`` on the kept tokens, so a
                task loss reaches the selector map (SoftWhere); the forward value is unchanged.
        Returns:
            ``cls`` (B,D), ``tokens`` (B,k,D), ``selector_map`` (B,N), ``selected`` (B,k),
            ``prefix`` (B,P,D) and, with ``dense``, ``dense``.
        """
        grid = self.grid(images)
        sel = self.selector(images, grid)
        return self.extract(images, sel, grid, k=k, dense=dense, keep=keep, gate=gate)

    def extract(
        self,
        images: Tensor,
        sel: dict[str, Tensor],
        grid: tuple[int, int],
        k: int | float | None = None,
        dense: bool = False,
        keep: Tensor | None = None,
        gate: bool = False,
    ) -> dict[str, Tensor]:
        """The extractor half of :meth:`forward`, given the selector's output ``sel`` (reusable
        across several k)."""
        if keep is None:
            keep = self.select(sel["map"].detach(), k)
        scale = None
        if gate:
            soft = torch.sigmoid(sel["map"].float()).gather(1, keep)
            scale = 1.0 + soft - soft.detach()
        x = self.extractor(images, keep, sel["prefix"], token_scale=scale)
        tokens = x[:, self.num_prefix :]
        out = {
            "cls": x[:, 0],
            "tokens": tokens,
            "selector_map": sel["map"],
            "selector_prefix": sel["prefix"],
            "selected": keep,
            "prefix": x[:, : self.num_prefix],
        }
        if dense:
            out["dense"] = self.densify(tokens, keep, grid)
        return out

    def densify(self, tokens: Tensor, keep: Tensor, grid: tuple[int, int]) -> Tensor:
        """K-NN fill of the sparse tokens to (B, D, gh, gw)."""
        full = knn_upsample(tokens, keep, grid, knn=self.cfg.knn, tie_break=self.cfg.knn_tie_break)
        return full.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])


class FullResViT(nn.Module):
    """The baseline: the extractor's architecture on every high-res patch, with its own prefix."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = vit_from_config(cfg)
        self.embed_dim = cfg.embed_dim
        self.num_prefix = self.backbone.num_prefix_tokens

    def grid(self, images: Tensor) -> tuple[int, int]:
        return patch_grid(self.backbone, (images.shape[-2], images.shape[-1]))

    def forward(
        self, images: Tensor, k: int | float | None = None, dense: bool = False, keep: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Same output keys as :class:`LookWhere` (without selector entries); ``k`` is ignored."""
        vit = self.backbone
        grid = self.grid(images)
        patches = embed_all(vit, images) + grid_pos_embed(vit, grid)
        x = run_blocks(vit, prefix_tokens(vit, images.shape[0]), patches)
        tokens = x[:, self.num_prefix :]
        out = {"cls": x[:, 0], "tokens": tokens, "prefix": x[:, : self.num_prefix]}
        if dense:
            out["dense"] = tokens.transpose(1, 2).reshape(images.shape[0], -1, grid[0], grid[1])
        return out


def build_model(cfg: ModelConfig) -> nn.Module:
    """LookWhere for ``arch: lookwhere``, the full-resolution ViT for ``arch: vit``, the ViT with
    TokenLearner for ``arch: tokenlearner``."""
    if cfg.arch == "tokenlearner":
        return TokenLearnerViT(cfg)
    return LookWhere(cfg) if cfg.arch == "lookwhere" else FullResViT(cfg)


def image_size_of(model: nn.Module) -> tuple[int, int]:
    """Configured high-res input size of a model built here."""
    return to_size2(model.cfg.img_size)  # type: ignore[attr-defined]


@torch.no_grad()
def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
