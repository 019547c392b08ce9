"""Thin helpers around timm's ``VisionTransformer``: creation, patch embedding, positional grids.

We keep timm's module and parameter names (``patch_embed.proj``, ``pos_embed``, ``cls_token``,
``reg_token``, ``blocks.N.*``, ``norm``) so DINOv2 / official LookWhere state dicts load as they are,
but drive the forward pass ourselves: LookWhere needs (a) positional embeddings for any H×W grid,
(b) embedding of a *subset* of pixel patches and (c) prefix tokens supplied from outside.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

Size2 = tuple[int, int]


def to_size2(size: int | tuple[int, int] | list[int]) -> Size2:
    """``224`` -> ``(224, 224)``; ``[H, W]`` -> ``(H, W)``."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def create_vit(
    img_size: Size2,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    reg_tokens: int = 0,
    init_values: float | None = None,
    drop_path_rate: float = 0.0,
) -> VisionTransformer:
    """A timm ViT in the DINOv2 layout: CLS + registers without positional embedding, no head."""
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        reg_tokens=reg_tokens,
        no_embed_class=True,
        class_token=True,
        init_values=init_values,
        drop_path_rate=drop_path_rate,
        num_classes=0,
        global_pool="token",
    )


def vit_from_config(cfg: Any) -> VisionTransformer:
    """The high-res ViT of a :class:`~lw_lightning.models.config.ModelConfig`: LookWhere's extractor,
    the full-res baseline and the TokenLearner ViT's backbone share this architecture."""
    return create_vit(
        img_size=to_size2(cfg.img_size),
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        reg_tokens=cfg.reg_tokens,
        init_values=cfg.init_values,
        drop_path_rate=cfg.drop_path_rate,
    )


def patch_grid(vit: VisionTransformer, hw: Size2) -> Size2:
    """Patch grid of an ``H×W`` input; both sides must be multiples of the patch size."""
    p = patch_size(vit)
    h, w = hw
    if h % p or w % p:
        raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {p}")
    return (h // p, w // p)


def patch_size(vit: VisionTransformer) -> int:
    return int(vit.patch_embed.patch_size[0])


def resample_grid(pos: Tensor, new: Size2, old: Size2, antialias: bool = True) -> Tensor:
    """A prefix-free ``(1, gh*gw, D)`` pos-embed grid ``old`` -> ``new``, bicubic in float32.

    ``antialias=True`` is timm's default resampling; ``False`` is the plain bicubic of the DINOv2 /
    released LookWhere ``interpolate_pos_encoding`` (the two differ even when upsampling: the
    antialiased kernel is PIL's, a = -0.5, the plain one a = -0.75)."""
    if tuple(new) == tuple(old):
        return pos
    return resample_abs_pos_embed(pos, new_size=list(new), old_size=list(old), num_prefix_tokens=0, antialias=antialias)


def grid_pos_embed(vit: VisionTransformer, grid: Size2, antialias: bool = True) -> Tensor:
    """Patch positional embeddings ``(1, gh*gw, D)`` for ``grid``, bicubic-resampled if needed
    (see :func:`resample_grid`)."""
    pos = vit.pos_embed
    if not vit.no_embed_class:  # timm ViTs that also embed the prefix positions (e.g. DeiT, AugReg)
        pos = pos[:, vit.num_prefix_tokens :]
    return resample_grid(pos, grid, tuple(vit.patch_embed.grid_size), antialias=antialias)


def embed_all(vit: VisionTransformer, images: Tensor) -> Tensor:
    """Embed every patch of ``images`` (B,C,H,W) -> (B, N, D), row-major order, no pos-embed."""
    x = vit.patch_embed.proj(images)
    x = x.flatten(2).transpose(1, 2)
    return vit.patch_embed.norm(x)


def patchify(images: Tensor, p: int) -> Tensor:
    """(B,C,H,W) -> (B, N, C*p*p), each row flattened in the conv kernel's (C, kh, kw) order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def embed_selected(vit: VisionTransformer, images: Tensor, index: Tensor) -> Tensor:
    """Embed only the patches ``index`` (B,k) of ``images``: gather pixels first, then project.

    Same result as ``embed_all(...).gather(index)`` (the conv with kernel = stride = p is a linear
    map per patch) but costs k instead of N patch projections.
    """
    p = patch_size(vit)
    pixels = patchify(images, p)
    pixels = pixels.gather(1, index.unsqueeze(-1).expand(-1, -1, pixels.shape[-1]))
    proj = vit.patch_embed.proj
    x = F.linear(pixels, proj.weight.flatten(1), proj.bias)
    return vit.patch_embed.norm(x)


def prefix_tokens(vit: VisionTransformer, batch: int) -> Tensor:
    """The model's own CLS + register tokens, (B, P, D)."""
    parts = []
    if vit.cls_token is not None:
        parts.append(vit.cls_token.expand(batch, -1, -1))
    if vit.reg_token is not None:
        parts.append(vit.reg_token.expand(batch, -1, -1))
    prefix = torch.cat(parts, dim=1)
    if not vit.no_embed_class:
        prefix = prefix + vit.pos_embed[:, : vit.num_prefix_tokens]
    return prefix


def run_blocks(vit: VisionTransformer, prefix: Tensor, patches: Tensor) -> Tensor:
    """``[prefix; patches]`` -> blocks -> final norm. Patches already carry positions."""
    x = torch.cat([prefix, patches], dim=1)
    x = vit.pos_drop(x)
    x = vit.norm_pre(x)
    x = vit.blocks(x)
    return vit.norm(x)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b]]`` for (B,N,D) and (B,k)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
