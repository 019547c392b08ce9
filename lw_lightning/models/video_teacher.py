"""Frozen teachers of video what-where distillation and their targets on the tubelet grid.

* :class:`VideoTeacher`: a ViViT Model 1 (ours, from a VideoClassifier ``.ckpt``, or any ViViT
  config, e.g. with HF weights as ``pretrained``). "What": its final normalised tubelet tokens
  and its pooled feature (the CLS token for ``classifier: token``, else the mean of the tokens,
  what its head reads). "Where": the head- and query-averaged pre-softmax attention logits over
  tubelet keys of its last block (:func:`~.teacher.attention_target`, the image recipe), or of
  another block (``attn_block``).
* :class:`FrameTeacher`: an image ViT (DINOv2 in the paper) applied to the central frame of each
  temporal slice, resized so its patch grid is the slice's tubelet grid. Per-frame CLS averaged
  over slices, per-frame patch tokens and attention logits laid out in (t, h, w) order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch import Tensor

from ..errors import ConfigError
from .teacher import Teacher, TeacherConfig, attention_target, build_teacher
from .video_checkpoint import read_video_classifier, vivit_with_weights
from .video_lookwhere import tubelet_pos_embed
from .vivit import ViViT, vivit_config


@dataclass
class VideoTeacherConfig:
    """Where the frozen video teacher comes from: ``checkpoint`` (a ViViT VideoClassifier ``.ckpt``
    trained here) or ``model`` (ViViT fields, e.g. ``{preset: base, pretrained: ...}``; random
    weights without ``pretrained``: tests only)."""

    checkpoint: str | None = None
    model: dict[str, Any] | None = None
    #: query tokens averaged for the attention target: "patch" (every tubelet) or "cls" (needs a
    #: CLS-token ViViT).
    attn_query: str = "patch"
    #: the block whose attention is the "where" target (negative: from the end; -1 = the last, the
    #: paper's choice; the reference code's ``aggregate_layers`` knob picks others).
    attn_block: int = -1
    #: what the "where" target is: "attention" (the logits above, the paper's recipe) or
    #: "deviation" (how far each final tubelet token is from the clip's mean token, z-scored over
    #: the clip: where the teacher's representation departs from the background; see docs/design.md).
    where_signal: str = "attention"


#: values of ``VideoTeacherConfig.where_signal``
WHERE_SIGNALS = ("attention", "deviation")


def deviation_target(patch: Tensor) -> Tensor:
    """(B, N) logits: ``‖z_i − mean_j z_j‖`` of the final tokens ``patch`` (B, N, D), standardised
    over the N tokens of each clip (mean 0, std 1), so its softmax does not depend on the width."""
    d = (patch.float() - patch.float().mean(1, keepdim=True)).norm(dim=-1)
    return (d - d.mean(1, keepdim=True)) / d.std(1, keepdim=True).clamp(min=1e-6)


class VideoTeacher(nn.Module):
    """A frozen ViViT Model 1 returning ``cls`` (B,D), ``patch`` (B,N,D) and ``attn`` (B,N)."""

    def __init__(self, vivit: ViViT, attn_query: str = "patch", attn_block: int = -1, where_signal: str = "attention") -> None:
        super().__init__()
        if where_signal not in WHERE_SIGNALS:
            raise ConfigError(f"module.teacher.where_signal must be one of {', '.join(WHERE_SIGNALS)}, got {where_signal!r}")
        self.where_signal = where_signal
        cfg = vivit.cfg
        depth = len(vivit.encoder.blocks)
        if not -depth <= attn_block < depth:
            raise ConfigError(
                f"module.teacher.attn_block={attn_block}: a block index of the teacher's {depth} blocks (-{depth}..{depth - 1})"
            )
        self.attn_block = attn_block % depth
        if cfg.variant != "joint" or cfg.num_tokens:
            raise ConfigError(
                "the video teacher must be a ViViT Model 1 without TokenLearner (variant joint, num_tokens 0): "
                "its tokens are the tubelet grid the student is distilled on"
            )
        self.num_prefix = int(getattr(cfg, "num_prefix", 0))  # a CLS token (classifier: token) or none
        if attn_query not in ("patch", "cls"):
            raise ConfigError(f"module.teacher.attn_query must be 'patch' or 'cls', got {attn_query!r}")
        if attn_query == "cls" and not self.num_prefix:
            raise ConfigError(
                "module.teacher.attn_query=cls needs a ViViT with a CLS token (classifier: token); this one pools its tokens"
            )
        self.vivit = vivit
        self.attn_query = attn_query
        self.vivit.requires_grad_(False)
        self.vivit.eval()
        self.embed_dim = cfg.embed_dim

    def train(self, mode: bool = True) -> VideoTeacher:
        return super().train(False)  # never trained: no dropout, no drop-path

    @torch.no_grad()
    def forward(self, video: Tensor) -> dict[str, Tensor]:
        v, p = self.vivit, self.num_prefix
        x = v.patch_embed(video)
        if p:
            x = torch.cat([v.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = x + v.pos_embed
        else:
            x = x + tubelet_pos_embed(v)
        x = v.pos_drop(x)
        for i, block in enumerate(v.encoder.blocks):
            if i == self.attn_block and self.where_signal == "attention":
                attn = attention_target(block, x, p, self.attn_query)
            x = block(x)
        x = v.norm(x)
        patch = x[:, p:]
        if self.where_signal == "deviation":
            attn = deviation_target(patch)
        return {"cls": x[:, 0] if p else patch.mean(1), "patch": patch, "attn": attn}


def build_video_teacher(cfg: VideoTeacherConfig) -> VideoTeacher:
    if cfg.checkpoint:
        vcfg, state = read_video_classifier(cfg.checkpoint, "teacher checkpoint")
        vivit = ViViT(vcfg, num_classes=state["head.weight"].shape[0] if "head.weight" in state else 1)
        from .checkpoint import check_state_dict

        check_state_dict(vivit.state_dict(), state, f"teacher checkpoint {cfg.checkpoint}")
        vivit.load_state_dict(state, strict=True)
    elif cfg.model:
        vivit = vivit_with_weights(vivit_config(**dict(cfg.model)), num_classes=1)
    else:
        raise ConfigError("module.teacher needs checkpoint (a ViViT VideoClassifier .ckpt) or model (ViViT fields)")
    return VideoTeacher(vivit, cfg.attn_query, cfg.attn_block, cfg.where_signal)


@dataclass
class FrameTeacherConfig(TeacherConfig):
    """An image teacher (:class:`~.teacher.TeacherConfig` fields) applied frame by frame, plus the
    normalisations: the clips' (``data_mean``/``data_std``) and the teacher's own."""

    data_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    data_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


class FrameTeacher(nn.Module):
    """An image :class:`~.teacher.Teacher` on the central frame of each temporal slice."""

    def __init__(self, teacher: Teacher, cfg: FrameTeacherConfig) -> None:
        super().__init__()
        self.teacher = teacher
        self.embed_dim = teacher.embed_dim
        self.patch = int(teacher.vit.patch_embed.patch_size[0])
        # clip normalisation -> [0, 1] -> the teacher's normalisation, as one affine map per channel
        dm, ds = torch.tensor(cfg.data_mean), torch.tensor(cfg.data_std)
        tm, ts = torch.tensor(cfg.mean), torch.tensor(cfg.std)
        self.register_buffer("scale", (ds / ts).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((dm - tm) / ts).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FrameTeacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, video: Tensor, grid: tuple[int, int, int], tubelet_t: int) -> dict[str, Tensor]:
        b, c = video.shape[:2]
        nt, nh, nw = grid
        frames = video[:, :, tubelet_t // 2 :: tubelet_t][:, :, :nt]  # the central frame of each slice
        x = frames.transpose(1, 2).reshape(b * nt, c, *video.shape[-2:])
        x = F.interpolate(x, size=(nh * self.patch, nw * self.patch), mode="bilinear", align_corners=False, antialias=True)
        out = self.teacher(x * self.scale + self.shift)
        d = out["cls"].shape[-1]
        return {
            "cls": out["cls"].reshape(b, nt, d).mean(1),
            "patch": out["patch"].reshape(b, nt * nh * nw, d),
            "attn": out["attn"].reshape(b, nt * nh * nw),
        }


def build_frame_teacher(cfg: FrameTeacherConfig) -> FrameTeacher:
    return FrameTeacher(build_teacher(cfg), cfg)
