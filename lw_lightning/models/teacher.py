"""The frozen distillation teacher (DINOv2 in the paper) and its "what"/"where" targets.

"What": the teacher's CLS and patch tokens after its final norm.
"Where": the last block's pre-softmax attention logits averaged over heads and over the query
tokens (patch queries, or the CLS query), over patch keys only:

    A_j = mean_h mean_i (q_hi · k_hj) / sqrt(d) = mean_h (q̄_h · k_hj) / sqrt(d)

Logits are linear in q, so averaging the queries first gives the same number in O(N·d) without
the N×N attention matrix; the teacher's blocks keep using fused attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor

from .checkpoint import create_timm_vit, vit_from_lightning_checkpoint
from .config import model_config
from .vit import embed_all, grid_pos_embed, patch_grid, prefix_tokens

DEFAULT_TEACHER = "vit_base_patch14_reg4_dinov2.lvd142m"


@dataclass
class TeacherConfig:
    """Where the teacher comes from. Exactly one source is used, in this order:

    * ``checkpoint`` ending in ``.ckpt``: a full-res ViT trained here (an ImageClassifier
      checkpoint with ``model.arch: vit``);
    * ``name``: a timm ViT (e.g. ``vit_base_patch14_reg4_dinov2.lvd142m``) with weights from the
      local file ``checkpoint`` (timm/HF safetensors or an official DINOv2 ``.pth``: timm's
      checkpoint filter converts it), or downloaded when ``pretrained`` is true and online;
    * ``preset``: a randomly initialised preset (tests only).
    """

    name: str | None = DEFAULT_TEACHER
    checkpoint: str | None = None
    pretrained: bool = False
    preset: str | None = None
    #: input size the teacher is built for (its pos-embed is resampled to any other input size).
    img_size: list[int] | None = None
    #: query tokens averaged for the attention target: "patch" (DINOv2 recipe) or "cls".
    attn_query: str = "patch"


def attention_target(block: Block, x: Tensor, num_prefix: int, query: str = "patch") -> Tensor:
    """Head- and query-averaged pre-softmax attention logits of ``block`` over patch keys.

    Args:
        block: a timm ``Block``; ``x`` is its input (B, P+N, D).
    Returns:
        (B, N) logits.
    """
    attn = block.attn
    h = block.norm1(x)
    b, n, _ = h.shape
    qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (B, H, T, d)
    if query == "patch":
        q_bar = q[:, :, num_prefix:].mean(2)
    elif query == "cls":
        q_bar = q[:, :, 0]
    else:
        raise ValueError(f"attn_query must be 'patch' or 'cls', got {query!r}")
    with torch.autocast(x.device.type, enabled=False):  # the "where" target stays fp32 under mixed precision
        logits = torch.einsum("bhd,bhnd->bhn", q_bar.float(), k[:, :, num_prefix:].float()) * attn.scale
    return logits.mean(1)


class Teacher(nn.Module):
    """A frozen timm ViT returning ``cls`` (B,D), ``patch`` (B,N,D) and ``attn`` (B,N)."""

    def __init__(self, vit: VisionTransformer, attn_query: str = "patch") -> None:
        super().__init__()
        self.vit = vit
        self.attn_query = attn_query
        self.vit.requires_grad_(False)
        self.vit.eval()
        self.embed_dim = vit.embed_dim
        self.num_prefix = vit.num_prefix_tokens

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # never trained: no dropout, no drop-path

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        vit = self.vit
        grid = patch_grid(vit, (images.shape[-2], images.shape[-1]))
        x = torch.cat([prefix_tokens(vit, images.shape[0]), embed_all(vit, images) + grid_pos_embed(vit, grid)], dim=1)
        x = vit.norm_pre(vit.pos_drop(x))
        for blk in vit.blocks[:-1]:
            x = blk(x)
        attn = attention_target(vit.blocks[-1], x, self.num_prefix, self.attn_query)
        x = vit.norm(vit.blocks[-1](x))
        return {"cls": x[:, 0], "patch": x[:, self.num_prefix :], "attn": attn}


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """Create the frozen teacher from a local checkpoint, a timm name, or a preset."""
    ckpt = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else None
    if ckpt is not None and not ckpt.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {ckpt}")
    if ckpt is not None and ckpt.suffix == ".ckpt":
        vit = vit_from_lightning_checkpoint(ckpt, "teacher checkpoint")
    elif cfg.name:
        vit = create_timm_vit(cfg.name, ckpt, "teacher checkpoint", pretrained=cfg.pretrained, img_size=cfg.img_size)
    elif cfg.preset:
        from .lookwhere import FullResViT

        overrides = {"img_size": list(cfg.img_size)} if cfg.img_size else {}
        vit = FullResViT(model_config(cfg.preset, arch="vit", **overrides)).backbone
    else:
        raise ValueError("teacher needs one of: checkpoint (.ckpt), name (timm), preset")
    return Teacher(vit, cfg.attn_query)
