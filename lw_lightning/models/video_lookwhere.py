"""LookWhere in space-time: a cheap selector ViViT picks the tubelets a ViViT extractor sees.

Data flow (the image LookWhere of :mod:`.lookwhere`, with time as a third axis)::

    clip [B,3,T,H,W] --box filter in time, antialiased resize in space--> low-res, low-frame-rate clip
    --selector ViViT (shallow, + CLS/registers)--> prefix tokens, low-res tubelet tokens
    tokens --SelectorHead (D -> 4D -> rt·rh·rw)--> sub-tubelet logits --(trilinear if needed)-->
        map (B, nt·nh·nw): one logit per high-res tubelet (t, h, w)
    keep = top-k over space-time (count or fraction; optionally >= m per temporal slice)
    extractor ViViT Model 1 on [selector prefix ; embed(pixels of the kept tubelets) + pos[keep]]
    -> CLS features, k tubelet features --K-NN inverse distance in (t, h, w)--> dense features.

The selector and the extractor are :class:`~.vivit.ViViT` modules (tubelet embedding, posemb,
timm blocks, final norm) driven here; the head is the image :class:`~.lookwhere.SelectorHead`
with a 3-D sub-tubelet block; the fill is :func:`~.knn_upsample.knn_upsample` on the 3-D grid.
As in the image model the selection is hard (no gradient through the indices) and the extractor's
CLS is the selector's output CLS; a ViViT has no CLS of its own, so the selector owns one (plus
optional registers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .config import check_k, resolve_k
from .knn_upsample import knn_upsample
from .lookwhere import SelectorHead
from .vivit import PRESETS as VIVIT_PRESETS
from .vivit import ViViT, ViViTConfig, vivit_config

#: selector depth per ViViT preset (the image LookWhere-B selector has 3 of 12 blocks)
SELECTOR_DEPTH = {"tiny": 2, "base": 3, "large": 3}
#: fields of a ViViT preset that the extractor takes over
_VIVIT_FIELDS = ("img_size", "num_frames", "tubelet", "embed_dim", "depth", "num_heads", "mlp_ratio")
EXPORT_FORMAT = "lw_lightning.video_lookwhere/1"


@dataclass
class VideoLookWhereConfig:
    """Architecture of a video LookWhere model (``arch: lookwhere`` in a video recipe).

    Values not given come from ``preset`` (a ViViT preset: ``tiny``, ``base``, ``large``); see
    :func:`video_lookwhere_config`.
    """

    arch: str = "lookwhere"
    preset: str = "base"
    # extractor: ViViT Model 1 (joint space-time attention), no TokenLearner
    img_size: int = 224
    num_frames: int = 32
    #: tubelet (t, h, w) of the extractor's grid, also used by the selector on its low-res clip.
    tubelet: list[int] = field(default_factory=lambda: [2, 16, 16])
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    # selector ("where")
    selector_depth: int = 3
    #: side of the selector's low-res frames; None: half of ``img_size`` (a tubelet multiple).
    selector_img_size: int | None = None
    #: frames of the selector's clip; None: half of ``num_frames`` (a tubelet-t multiple).
    selector_num_frames: int | None = None
    #: (rt, rh, rw) sub-tubelet logits per low-res token; None: ceil(high-res grid / low-res grid).
    selector_block: list[int] | None = None
    #: register tokens of the selector besides its CLS (prefix tokens of the extractor).
    reg_tokens: int = 0
    #: antialias the spatial downsampling of the selector's input.
    antialias: bool = True
    # selection
    #: tubelets kept by default: an int count or a float fraction of nt·nh·nw.
    k: int | float = 0.1
    #: keep at least this many tubelets in every temporal slice (0: plain top-k).
    slice_quota: int = 0
    #: neighbours of the K-NN fill of dense features (grid units over (t, h, w)).
    knn: int = 5
    #: weights exported by the video distillation (``video_lookwhere.pt``), loaded at construction.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.arch != "lookwhere":
            raise ConfigError(f"model.arch={self.arch!r}: a VideoLookWhereConfig is arch 'lookwhere'")
        if len(self.tubelet) != 3 or min(int(v) for v in self.tubelet) < 1:
            raise ConfigError(f"model.tubelet must be [t, h, w] of positive sizes, got {list(self.tubelet)}")
        self.tubelet = [int(v) for v in self.tubelet]
        t, h, w = self.tubelet
        if self.selector_img_size is None:
            self.selector_img_size = max(h, (self.img_size // 2) // h * h)
        if self.selector_num_frames is None:
            self.selector_num_frames = max(t, (self.num_frames // 2) // t * t)
        for what, frames, size in (
            ("model", self.num_frames, self.img_size),
            ("model.selector", self.selector_num_frames, self.selector_img_size),
        ):
            if frames % t or size % h or size % w or frames < t or size < max(h, w):
                raise ConfigError(
                    f"{what}: {frames} frames of {size}^2 px are not whole tubelets {self.tubelet} (num_frames, img_size must be multiples)"
                )
        if any(lo > hi for lo, hi in zip(self.selector_grid, self.grid)):
            raise ConfigError(
                f"model.selector grid {self.selector_grid} is finer than the extractor's {self.grid}: the selector is the low-res copy"
            )
        if not 1 <= self.selector_depth <= self.depth:
            raise ConfigError(
                f"model.selector_depth={self.selector_depth} must lie in 1..{self.depth} (it starts from the teacher's first blocks)"
            )
        if self.selector_block is not None and (len(self.selector_block) != 3 or min(self.selector_block) < 1):
            raise ConfigError(f"model.selector_block must be [rt, rh, rw] of positive ints, got {self.selector_block}")
        if self.reg_tokens < 0 or self.knn < 1:
            raise ConfigError(f"model.reg_tokens={self.reg_tokens} / model.knn={self.knn}: need reg_tokens >= 0 and knn >= 1")
        n = self.num_tubelets
        check_tubelet_k(self.k, n, "model.k")
        if isinstance(self.slice_quota, bool) or not isinstance(self.slice_quota, int) or self.slice_quota < 0:
            raise ConfigError(f"model.slice_quota={self.slice_quota!r}: tubelets kept per temporal slice, an int >= 0")
        per_slice = self.grid[1] * self.grid[2]
        if self.slice_quota > per_slice:
            raise ConfigError(f"model.slice_quota={self.slice_quota} is more than the {per_slice} tubelets of a temporal slice")
        check_quota(self.slice_quota, self.grid[0], resolve_k(self.k, n), "model.k")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Extractor tubelet grid (nt, nh, nw)."""
        t, h, w = self.tubelet
        return (self.num_frames // t, self.img_size // h, self.img_size // w)

    @property
    def selector_grid(self) -> tuple[int, int, int]:
        t, h, w = self.tubelet
        return (int(self.selector_num_frames) // t, int(self.selector_img_size) // h, int(self.selector_img_size) // w)  # type: ignore[arg-type]

    @property
    def num_tubelets(self) -> int:
        return math.prod(self.grid)

    @property
    def num_prefix(self) -> int:
        """Prefix tokens (the selector's CLS + registers) the extractor sees before the tubelets."""
        return 1 + self.reg_tokens

    @property
    def block(self) -> tuple[int, int, int]:
        """Sub-tubelet logits (rt, rh, rw) each low-res token predicts."""
        if self.selector_block is not None:
            return tuple(int(v) for v in self.selector_block)  # type: ignore[return-value]
        return tuple(math.ceil(g / s) for g, s in zip(self.grid, self.selector_grid))  # type: ignore[return-value]

    def vivit(self, selector: bool = False) -> ViViTConfig:
        """The ViViT (Model 1, no TokenLearner) of the extractor or of the selector."""
        fields = {f: getattr(self, f) for f in _VIVIT_FIELDS}
        if selector:
            fields.update(img_size=self.selector_img_size, num_frames=self.selector_num_frames, depth=self.selector_depth)
        return vivit_config(
            self.preset, variant="joint", num_tokens=0, dropout=self.dropout, drop_path_rate=self.drop_path_rate, **fields
        )


def check_tubelet_k(k: Any, n: int, name: str) -> None:
    """:func:`~.config.check_k` for tubelets: one-line ConfigError unless ``k`` is None, a count
    1..n or a fraction in (0, 1]."""
    try:
        check_k(k, n, name)
    except ValueError as err:
        raise ConfigError(str(err).replace("patches", "tubelets")) from None


def check_quota(quota: int, slices: int, k: int, name: str) -> None:
    """One-line ConfigError when ``quota`` per temporal slice needs more than the ``k`` tubelets kept."""
    if quota * slices > k:
        raise ConfigError(
            f"model.slice_quota={quota} x {slices} temporal slices = {quota * slices} tubelets is more than {name} = {k} kept"
        )


def video_lookwhere_config(preset: str = "base", **overrides: Any) -> VideoLookWhereConfig:
    """A :class:`VideoLookWhereConfig` from a ViViT preset (plus its selector depth) and overrides."""
    if preset not in VIVIT_PRESETS:
        raise ConfigError(f"unknown video LookWhere preset {preset!r}; choose from {sorted(VIVIT_PRESETS)}")
    names = {f.name for f in dataclasses.fields(VideoLookWhereConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown video LookWhere option(s) {unknown}; known: {sorted(names)}")
    base = {k: v for k, v in VIVIT_PRESETS[preset].items() if k in _VIVIT_FIELDS}
    return VideoLookWhereConfig(**{**base, "selector_depth": SELECTOR_DEPTH.get(preset, 3), **overrides, "preset": preset})


# ------------------------------------------------------------------------------------------------
# tubelets: gather-before-embed, posembs, selection
# ------------------------------------------------------------------------------------------------


def tubelet_pos_embed(vivit: ViViT) -> Tensor:
    """The posemb rows of the tubelet tokens ``(1, nt·nh·nw, D)`` (a CLS position, if the ViViT
    has one, comes first and is skipped)."""
    return vivit.pos_embed[:, -math.prod(vivit.cfg.grid) :]


def embed_tubelets(vivit: ViViT, video: Tensor, index: Tensor) -> Tensor:
    """Embed only the tubelets ``index`` (B, k) of ``video`` (B, C, T, H, W), posemb added: (B, k, D).

    Pixels are gathered first, then projected with the tubelet kernel (a Conv3d with kernel =
    stride is one linear map per tubelet), so the cost is k projections, not nt·nh·nw; the result
    equals ``(patch_embed(video) + pos).gather(index)``. Frames / pixels beyond the last whole
    tubelet are ignored (VALID padding, as the conv)."""
    t, h, w = vivit.patch_embed.tubelet
    b, c, T, H, W = video.shape
    nt, nh, nw = T // t, H // h, W // w
    if (nt * t, nh * h, nw * w) != (T, H, W):
        video = video[:, :, : nt * t, : nh * h, : nw * w]
    cells = video.reshape(b, c, nt, t, nh, h, nw, w)
    ti, rest = index.div(nh * nw, rounding_mode="floor"), index.remainder(nh * nw)
    hi, wi = rest.div(nw, rounding_mode="floor"), rest.remainder(nw)
    bi = torch.arange(b, device=index.device).unsqueeze(1).expand_as(index)
    pixels = cells[bi, :, ti, :, hi, :, wi, :]  # advanced indices apart: (B, k, C, t, h, w), no full copy
    proj = vivit.patch_embed.proj
    x = F.linear(pixels.flatten(2), proj.weight.flatten(1), proj.bias)
    pos = tubelet_pos_embed(vivit).expand(b, -1, -1)
    return x + pos.gather(1, index.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))


def topk_tubelets(scores: Tensor, k: int, slices: int = 1, quota: int = 0) -> Tensor:
    """Indices (B, k) of the ``k`` highest ``scores`` (B, N), at least ``quota`` from each of the
    ``slices`` equal, consecutive temporal slices; highest score first.

    With a quota, each slice first gives its top ``quota`` tubelets, then the remaining
    ``k - slices·quota`` are the best of the rest over all of space-time.
    """
    b, n = scores.shape
    if quota <= 0:
        return scores.topk(k, dim=1, sorted=True).indices
    if n % slices:
        raise ValueError(f"{n} tubelet scores do not form {slices} temporal slices")
    check_quota(quota, slices, k, "k")
    per = n // slices
    offsets = torch.arange(slices, device=scores.device).mul(per).view(1, slices, 1)
    keep = (scores.view(b, slices, per).topk(quota, dim=2).indices + offsets).flatten(1)
    rest = k - keep.shape[1]
    if rest > 0:
        others = scores.scatter(1, keep, float("-inf"))
        keep = torch.cat([keep, others.topk(rest, dim=1).indices], dim=1)
    order = scores.gather(1, keep).argsort(dim=1, descending=True, stable=True)
    return keep.gather(1, order)


def downsample_clip(video: Tensor, frames: int, size: int, antialias: bool = True) -> Tensor:
    """The selector's input: ``frames`` frames of ``size``² px. Time: a box filter when the frame
    count divides (averaging ``T / frames`` neighbours), else linear interpolation; space: bilinear,
    antialiased, frame by frame."""
    b, c, T, H, W = video.shape
    if frames != T:
        if T % frames == 0:
            video = video.reshape(b, c, frames, T // frames, H, W).mean(3)
        else:
            video = F.interpolate(video, size=(frames, H, W), mode="trilinear", align_corners=False)
    if (size, size) != (H, W):
        x = video.transpose(1, 2).reshape(b * frames, c, H, W)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        video = x.reshape(b, frames, c, size, size).transpose(1, 2)
    return video


def resample_pos_embed_3d(pos: Tensor, old: tuple[int, int, int], new: tuple[int, int, int]) -> Tensor:
    """A ``(1, nt·nh·nw, D)`` space-time posemb resampled to another grid (trilinear, in fp32)."""
    if tuple(old) == tuple(new):
        return pos
    d = pos.shape[-1]
    grid = pos.float().reshape(1, *old, d).permute(0, 4, 1, 2, 3)
    grid = F.interpolate(grid, size=tuple(new), mode="trilinear", align_corners=False)
    return grid.permute(0, 2, 3, 4, 1).reshape(1, math.prod(new), d).to(pos.dtype)


def _headless_vivit(cfg: ViViTConfig) -> ViViT:
    vivit = ViViT(cfg, num_classes=1)
    vivit.head = nn.Identity()  # LookWhere reads tokens; an unused head would stall DDP's reducer
    return vivit


def _run(vivit: ViViT, prefix: Tensor, tubelets: Tensor) -> Tensor:
    """``[prefix; tubelets]`` (tubelets carry their posemb) -> the ViViT's blocks -> final norm."""
    x = vivit.pos_drop(torch.cat([prefix, tubelets], dim=1))
    for block in vivit.encoder.blocks:
        x = block(x)
    return vivit.norm(x)


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------


class SpaceTimeSelectorHead(SelectorHead):
    """The image :class:`~.lookwhere.SelectorHead` (``D -> 4D -> ·``, names ``w1``/``w2``)
    predicting an ``rt × rh × rw`` block of sub-tubelet logits per low-res token."""

    def __init__(self, dim: int, block: tuple[int, int, int], hidden_ratio: int = 4) -> None:
        super().__init__(dim, r=1, hidden_ratio=hidden_ratio)
        self.block = tuple(block)
        self.w2 = nn.Linear(self.w2.in_features, math.prod(block))


class VideoSelector(nn.Module):
    """Shallow ViViT on a low-res, low-frame-rate copy of the clip: one logit per high-res tubelet,
    plus the prefix tokens (its output CLS and registers) handed to the extractor."""

    def __init__(self, cfg: VideoLookWhereConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vivit = _headless_vivit(cfg.vivit(selector=True))
        d = cfg.embed_dim
        # names as timm's, so the optimiser leaves them undecayed (optim.NO_DECAY_NAMES)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        for p in (self.cls_token, self.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)  # timm's init of CLS / register tokens
        self.head = SpaceTimeSelectorHead(d, cfg.block)

    def prefix(self, batch: int) -> Tensor:
        parts = [self.cls_token] + ([self.reg_token] if self.reg_token is not None else [])
        return torch.cat(parts, dim=1).expand(batch, -1, -1)

    def forward(self, video: Tensor) -> dict[str, Tensor]:
        """``map`` (B, nt·nh·nw) fp32 logits on the extractor's grid, ``prefix`` (B, P, D), ``tokens``."""
        cfg = self.cfg
        lo = downsample_clip(video, int(cfg.selector_num_frames), int(cfg.selector_img_size), cfg.antialias)  # type: ignore[arg-type]
        vivit = self.vivit
        x = _run(vivit, self.prefix(video.shape[0]), vivit.patch_embed(lo) + tubelet_pos_embed(vivit))
        p = cfg.num_prefix
        prefix, tokens = x[:, :p], x[:, p:]
        (lt, lh, lw), (rt, rh, rw) = cfg.selector_grid, self.head.block
        b = tokens.shape[0]
        sub = self.head(tokens).reshape(b, lt, lh, lw, rt, rh, rw)
        sub = sub.permute(0, 1, 4, 2, 5, 3, 6).reshape(
            b, 1, lt * rt, lh * rh, lw * rw
        )  # 'b (t h w) (i j l) -> b 1 (t i) (h j) (w l)'
        sub = sub.float()  # fp32 map under mixed precision: stable top-k and map loss
        if tuple(sub.shape[2:]) != cfg.grid:
            sub = F.interpolate(sub, size=cfg.grid, mode="trilinear", align_corners=False)
        return {"map": sub.flatten(1), "prefix": prefix, "tokens": tokens}


class VideoExtractor(nn.Module):
    """Full-depth ViViT Model 1 that sees only the kept tubelets plus the selector's prefix."""

    def __init__(self, cfg: VideoLookWhereConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vivit = _headless_vivit(cfg.vivit())

    def forward(self, video: Tensor, keep: Tensor, prefix: Tensor, gather_pixels: bool = True) -> Tensor:
        """(B, P + k, D) after the final norm. ``gather_pixels=False`` embeds every tubelet and
        gathers afterwards (the reference path, for tests and benchmarks)."""
        vivit = self.vivit
        if gather_pixels:
            tubelets = embed_tubelets(vivit, video, keep)
        else:
            full = vivit.patch_embed(video) + tubelet_pos_embed(vivit)
            tubelets = full.gather(1, keep.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        return _run(vivit, prefix, tubelets)


class VideoLookWhere(nn.Module):
    """Selector + space-time top-k + extractor; ``forward`` returns a dict of features (no head)."""

    def __init__(self, cfg: VideoLookWhereConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.selector = VideoSelector(cfg)
        self.extractor = VideoExtractor(cfg)
        self.embed_dim = cfg.embed_dim
        self.num_prefix = cfg.num_prefix

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.cfg.grid

    def check_input(self, video: Tensor) -> None:
        c = self.cfg
        want = (3, c.num_frames, c.img_size, c.img_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != want:
            raise ValueError(
                f"video LookWhere expects clips [B, 3, T, H, W] = [B, {', '.join(map(str, want))}], got {list(video.shape)}"
            )

    def resolve_k(self, k: int | float | None = None) -> int:
        k = self.cfg.k if k is None else k
        check_tubelet_k(k, self.cfg.num_tubelets, "k")
        return resolve_k(k, self.cfg.num_tubelets)

    def select(self, selector_map: Tensor, k: int | float | None = None, quota: int | None = None) -> Tensor:
        """Hard top-k over space-time (with the per-slice quota), highest score first: (B, k)."""
        q = self.cfg.slice_quota if quota is None else quota
        return topk_tubelets(selector_map, self.resolve_k(k), self.cfg.grid[0], q)

    def forward(
        self,
        video: Tensor,
        k: int | float | None = None,
        dense: bool = False,
        keep: Tensor | None = None,
        quota: int | None = None,
    ) -> dict[str, Tensor]:
        """Features of ``video``. Returns ``cls`` (B,D), ``tokens`` (B,k,D), ``selector_map`` (B,N),
        ``selected`` (B,k), ``prefix`` (B,P,D), ``selector_prefix`` and, with ``dense``,
        ``dense`` (B, D, nt, nh, nw) K-NN-filled features. ``keep`` overrides the selection."""
        self.check_input(video)
        return self.extract(video, self.selector(video), k=k, dense=dense, keep=keep, quota=quota)

    def extract(
        self,
        video: Tensor,
        sel: dict[str, Tensor],
        k: int | float | None = None,
        dense: bool = False,
        keep: Tensor | None = None,
        quota: int | None = None,
    ) -> dict[str, Tensor]:
        """The extractor half of :meth:`forward` given the selector's output (reusable across k)."""
        if keep is None:
            keep = self.select(sel["map"].detach(), k, quota)
        x = self.extractor(video, keep, sel["prefix"])
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
            out["dense"] = self.densify(tokens, keep)
        return out

    def densify(self, tokens: Tensor, keep: Tensor) -> Tensor:
        """K-NN fill of the kept tubelets' features over the (t, h, w) grid: (B, D, nt, nh, nw)."""
        full = knn_upsample(tokens, keep, self.cfg.grid, knn=self.cfg.knn)
        return full.transpose(1, 2).reshape(tokens.shape[0], -1, *self.cfg.grid)


class VideoLookWhereNet(nn.Module):
    """Video LookWhere + a linear head on the extractor's CLS: ``[B, 3, T, H, W] -> logits`` (the
    network of :class:`~lw_lightning.modules.video_lookwhere.VideoLookWhereClassifier`).

    ``forward(video, k)`` keeps ``k`` tubelets (default ``cfg.k``); a frozen selector also stays
    in eval mode; ``cfg.pretrained`` (the distillation's export) is loaded at construction.
    """

    def __init__(self, cfg: VideoLookWhereConfig, num_classes: int, freeze_selector: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.freeze_selector = freeze_selector
        self.lookwhere = VideoLookWhere(cfg)
        if cfg.pretrained:
            load_video_lookwhere(self.lookwhere, cfg.pretrained)
        self.head = nn.Linear(cfg.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        if freeze_selector:
            self.lookwhere.selector.requires_grad_(False)

    def train(self, mode: bool = True) -> VideoLookWhereNet:
        super().train(mode)
        if self.freeze_selector:
            self.lookwhere.selector.eval()  # frozen: no dropout / drop-path noise either
        return self

    def forward(self, video: Tensor, k: int | float | None = None) -> Tensor:
        return self.head(self.lookwhere(video, k=k)["cls"])


# ------------------------------------------------------------------------------------------------
# weights: video teacher checkpoints, initialisation, export
# ------------------------------------------------------------------------------------------------


def init_from_video_teacher(model: VideoLookWhere, teacher: ViViT) -> None:
    """Student initialisation (the paper's recipe in space-time): extractor = teacher copy;
    selector = the teacher's tubelet embedding, its posemb resampled to the low-res grid, its
    first ``selector_depth`` blocks and final norm (and its CLS token, if it has one). The
    selector head and prefix tokens otherwise keep their init."""
    from .checkpoint import check_state_dict

    tc, cfg = teacher.cfg, model.cfg
    if tc.variant != "joint" or tc.num_tokens:
        raise ConfigError("the video teacher must be a ViViT Model 1 without TokenLearner (variant joint, num_tokens 0)")
    mismatch = [n for n in ("embed_dim", "depth", "num_heads", "mlp_ratio") if getattr(tc, n) != getattr(cfg, n)]
    mismatch += ["tubelet"] if list(tc.tubelet) != list(cfg.tubelet) else []
    mismatch += ["grid"] if tuple(tc.grid) != tuple(cfg.grid) else []
    if mismatch:
        raise ConfigError(
            f"the video teacher's {mismatch[0]} differs from the student's: initialising from it needs the same "
            f"ViViT (set module.init_from_teacher=false to start from scratch)"
        )
    t_state = teacher.state_dict()
    pos = tubelet_pos_embed(teacher).detach()
    shared = {k: v for k, v in t_state.items() if k.startswith(("patch_embed.", "norm.", "encoder.blocks."))}
    for part, grid, depth in (
        (model.extractor.vivit, cfg.grid, cfg.depth),
        (model.selector.vivit, cfg.selector_grid, cfg.selector_depth),
    ):
        state = {k: v for k, v in shared.items() if not k.startswith("encoder.blocks.") or int(k.split(".")[2]) < depth}
        state["pos_embed"] = resample_pos_embed_3d(pos, tc.grid, grid)
        own = part.state_dict()
        check_state_dict({k: own[k] for k in state}, state, "video LookWhere <- teacher")
        missing = [k for k in own if k not in state]
        if missing:
            raise ConfigError(f"video LookWhere <- teacher: the teacher has no {missing[0]}")
        part.load_state_dict(state, strict=True)
    cls = getattr(teacher, "cls_token", None)
    if isinstance(cls, Tensor) and cls.shape == model.selector.cls_token.shape:
        with torch.no_grad():  # a CLS-token teacher: its CLS and CLS position start the selector's CLS
            model.selector.cls_token.copy_(cls + teacher.pos_embed[:, :1])


def export_video_lookwhere(model: VideoLookWhere) -> dict[str, Any]:
    """``{"format", "config", "selector", "extractor"}``: CPU state dicts plus the architecture."""
    cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
    return {
        "format": EXPORT_FORMAT,
        "config": dataclasses.asdict(model.cfg),
        "selector": cpu(model.selector.state_dict()),
        "extractor": cpu(model.extractor.state_dict()),
    }


def save_video_lookwhere(model: VideoLookWhere, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(export_video_lookwhere(model), path)
    return path


def load_video_lookwhere(model: VideoLookWhere, weights: str | Path | Mapping) -> VideoLookWhere:
    """Load :func:`export_video_lookwhere` weights (strict names and shapes, one-line errors)."""
    from .checkpoint import check_state_dict, read_weights

    where = "video LookWhere weights" if isinstance(weights, Mapping) else f"video LookWhere weights {weights}"
    if not isinstance(weights, Mapping):
        weights = read_weights(weights, "model.pretrained (video LookWhere weights)")
    if not isinstance(weights, Mapping) or weights.get("format") != EXPORT_FORMAT:
        raise ConfigError(
            f"{where}: not a video LookWhere export (expected format {EXPORT_FORMAT!r}, written by the video distillation)"
        )
    for name in ("selector", "extractor"):
        part = getattr(model, name)
        check_state_dict(part.state_dict(), weights[name], f"{where} ({name})")
        part.load_state_dict(weights[name], strict=True)
    return model
