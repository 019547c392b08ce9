"""ViViT (Arnab et al., 2021) on timm blocks, with TokenLearner per temporal slice.

* ``variant="joint"`` (Model 1): tubelet Conv3d -> tokens in (t, h, w) order + one learned posemb
  over all ``nt·nh·nw`` tokens -> blocks ``0…L-1`` on every token -> TokenLearner on each temporal
  slice (``[B·nt, nh·nw, C] -> [B, nt·S, C]``) -> remaining blocks with joint space-time attention on
  ``nt·S`` tokens -> LayerNorm -> mean over tokens -> zero-initialised head. No CLS token (P11).
* ``variant="factorised"`` (Model 2): the spatial encoder runs on each temporal slice
  (``[B·nt, nh·nw, C]``, shared weights) and ends with a per-frame TokenLearner (S tokens per slice)
  or, without one, a mean over the slice (1 token). A randomly initialised temporal encoder with a
  learned per-slice time embedding then attends over the ``nt·S`` tokens.

Image-ViT initialisation (:func:`load_image_vit`): tubelet kernel by central frame (default) or
averaging, spatial posemb resampled to the grid and tiled over time, blocks and final norm copied.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import Block
from torch import Tensor

from .tokenlearner import LayerNorm, TokenLearnerEncoder

log = logging.getLogger(__name__)

VARIANTS = ("joint", "factorised")
EMBED_INITS = ("central", "average")

#: Named sizes. ``tiny`` is for tests and the CPU demo (trained from scratch).
PRESETS: dict[str, dict] = {
    "tiny": dict(img_size=32, num_frames=8, tubelet=[2, 8, 8], embed_dim=64, depth=4, num_heads=4, temporal_depth=1),
    "base": dict(img_size=224, num_frames=32, tubelet=[2, 16, 16], embed_dim=768, depth=12, num_heads=12, temporal_depth=4),
    "large": dict(img_size=224, num_frames=32, tubelet=[2, 16, 16], embed_dim=1024, depth=24, num_heads=16, temporal_depth=4),
}


@dataclass
class ViViTConfig:
    """ViViT architecture. Values not given come from ``preset`` (see :func:`vivit_config`)."""

    preset: str = "base"
    variant: str = "joint"
    img_size: int = 224
    num_frames: int = 32
    #: tubelet (t, h, w): Conv3d kernel = stride.
    tubelet: list[int] = field(default_factory=lambda: [2, 16, 16])
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    #: factorised only: layers of the (randomly initialised) temporal encoder.
    temporal_depth: int = 4
    #: TokenLearner tokens per temporal slice; 0 disables TokenLearner.
    num_tokens: int = 0
    #: blocks run on all tokens before TokenLearner; None: half the depth (joint) / the whole
    #: spatial encoder (factorised).
    tokenlearner_loc: int | None = None
    tokenlearner_version: str = "v1.1"
    use_fuser: bool = False
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    #: how a 2-D patch kernel becomes a tubelet kernel when loading image weights.
    embed_init: str = "central"
    #: image ViT weights: a local file (.safetensors / .pth / .pt) or a timm model name.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.embed_init not in EMBED_INITS:
            raise ValueError(f"model.embed_init must be one of {EMBED_INITS}, got {self.embed_init!r}")
        if len(self.tubelet) != 3:
            raise ValueError(f"model.tubelet must be [t, h, w], got {self.tubelet}")
        t, h, w = self.tubelet
        if self.num_frames % t or self.img_size % h or self.img_size % w:
            raise ValueError(
                f"num_frames={self.num_frames} / img_size={self.img_size} are not multiples of the tubelet {self.tubelet}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (nt, nh, nw)."""
        t, h, w = self.tubelet
        return (self.num_frames // t, self.img_size // h, self.img_size // w)


def vivit_config(preset: str = "base", **overrides) -> ViViTConfig:
    """A :class:`ViViTConfig` from a named preset plus explicit overrides (None values ignored
    for keys the preset sets)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown ViViT preset {preset!r}; choose from {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(ViViTConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown ViViT option(s) {unknown}")
    return ViViTConfig(**{**PRESETS[preset], **overrides, "preset": preset})


def inflate_patch_kernel(weight2d: Tensor, t: int, method: str = "central") -> Tensor:
    """``[D, C, h, w]`` -> ``[D, C, t, h, w]``: all weight on frame ``t // 2`` (central; index 1 for
    t=2, P10) or spread evenly over the t frames (average, "filter inflation")."""
    if method == "central":
        out = weight2d.new_zeros(weight2d.shape[:2] + (t,) + weight2d.shape[2:])
        out[:, :, t // 2] = weight2d
        return out
    if method == "average":
        return weight2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    raise ValueError(f"unknown embed_init {method!r}; choose from {EMBED_INITS}")


class TubeletEmbed(nn.Module):
    """Conv3d with kernel = stride = (t, h, w): ``[B, C, T, H, W] -> [B, nt·nh·nw, D]``, (t h w) order."""

    def __init__(self, tubelet: tuple[int, int, int], embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.tubelet = tubelet
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=tubelet, stride=tubelet)

    def forward(self, video: Tensor) -> Tensor:
        return self.proj(video).flatten(2).transpose(1, 2)  # [B, D, nt, nh, nw] -> time-major tokens (P8)


def _blocks(cfg: ViViTConfig, depth: int) -> list[nn.Module]:
    dpr = [cfg.drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
    return [
        Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, proj_drop=cfg.dropout, drop_path=dpr[i], norm_layer=LayerNorm)
        for i in range(depth)
    ]


class ViViT(nn.Module):
    """ViViT Model 1 or Model 2 (``cfg.variant``) with optional TokenLearner; ``[B, 3, T, H, W] -> logits``."""

    def __init__(self, cfg: ViViTConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        nt, nh, nw = cfg.grid
        d = cfg.embed_dim
        self.patch_embed = TubeletEmbed(tuple(cfg.tubelet), d)  # type: ignore[arg-type]
        self.pos_drop = nn.Dropout(cfg.dropout)
        tl = dict(num_tokens=cfg.num_tokens, version=cfg.tokenlearner_version, use_fuser=cfg.use_fuser, dropout=cfg.dropout)
        if cfg.variant == "joint":
            self.pos_embed = nn.Parameter(torch.empty(1, nt * nh * nw, d))
            self.encoder = TokenLearnerEncoder(_blocks(cfg, cfg.depth), d, loc=cfg.tokenlearner_loc, **tl)
        else:
            self.pos_embed = nn.Parameter(torch.empty(1, nh * nw, d))
            loc = cfg.depth if cfg.tokenlearner_loc is None else cfg.tokenlearner_loc
            self.encoder = TokenLearnerEncoder(_blocks(cfg, cfg.depth), d, loc=loc, **tl)
            self.spatial_norm = LayerNorm(d)
            self.time_embed = nn.Parameter(torch.empty(1, nt, 1, d))
            nn.init.normal_(self.time_embed, std=0.02)
            self.temporal_encoder = nn.Sequential(*_blocks(cfg, cfg.temporal_depth))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.norm = LayerNorm(d)
        self.head = nn.Linear(d, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if cfg.pretrained:
            load_image_vit(self, cfg.pretrained)

    @property
    def num_output_tokens(self) -> int:
        """Tokens entering the last block (what TokenLearner saves compute on)."""
        nt, nh, nw = self.cfg.grid
        return self.encoder.output_tokens(nt * nh * nw, nt) if self.cfg.variant == "joint" else nt * max(1, self.cfg.num_tokens)

    def _check_input(self, video: Tensor) -> None:
        c = self.cfg
        want = (3, c.num_frames, c.img_size, c.img_size)
        if tuple(video.shape[1:]) != want:
            raise ValueError(f"ViViT expects video [B, 3, T, H, W] = [B, {', '.join(map(str, want[1:]))}], got {list(video.shape)}")

    def forward_features(self, video: Tensor) -> Tensor:
        """Final token features ``[B, N, D]`` (before pooling)."""
        self._check_input(video)
        nt, nh, nw = self.cfg.grid
        x = self.patch_embed(video)
        b, _, d = x.shape
        if self.cfg.variant == "joint":
            x = self.pos_drop(x + self.pos_embed)
            return self.norm(self.encoder(x, temporal_dims=nt, grid=(nh, nw)))
        # factorised: every temporal slice through the spatial encoder with shared weights
        x = self.pos_drop(x.reshape(b * nt, nh * nw, d) + self.pos_embed)
        x = self.encoder(x, temporal_dims=1, grid=(nh, nw))
        if self.cfg.num_tokens == 0:
            x = x.mean(dim=1, keepdim=True)  # one token per slice (scenic classifier='gap')
        x = self.spatial_norm(x).reshape(b, nt, -1, d) + self.time_embed
        return self.norm(self.temporal_encoder(x.reshape(b, -1, d)))

    def forward(self, video: Tensor) -> Tensor:
        return self.head(self.forward_features(video).mean(dim=1))


# ------------------------------------------------------------------------------------------------
# initialisation from an image ViT
# ------------------------------------------------------------------------------------------------


def read_state_dict(source: str) -> dict[str, Tensor]:
    """Weights of an image ViT from a local file, or from timm by model name (needs the timm cache
    or network). Checkpoints that nest the weights under ``state_dict`` / ``model`` are unwrapped."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        return {k.removeprefix("module."): v for k, v in state.items()}
    if any(sep in source for sep in ("/", "\\")) or path.suffix in (".pth", ".pt", ".safetensors", ".bin"):
        raise FileNotFoundError(f"pretrained weights file not found: {source}")
    import timm

    return timm.create_model(source.removeprefix("timm:"), pretrained=True, num_classes=0).state_dict()


def _spatial_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """Strip prefix (CLS / register) positions from a timm posemb and resample it to ``grid``."""
    n = pos.shape[1]
    prefix = next((p for p in range(0, 9) if math.isqrt(n - p) ** 2 == n - p), None)
    if prefix is None:
        raise ValueError(f"cannot read a square patch grid from a pos_embed with {n} positions")
    side = math.isqrt(n - prefix)
    return resample_abs_pos_embed(pos[:, prefix:].float(), new_size=list(grid), old_size=[side, side], num_prefix_tokens=0)


def load_image_vit(model: ViViT, source: str | dict[str, Tensor], embed_init: str | None = None) -> dict[str, list[str]]:
    """Initialise ``model`` from image-ViT weights (timm key names). Returns loaded / skipped keys.

    Tubelet kernel inflated by ``embed_init`` (default ``model.cfg.embed_init``); posemb resampled to
    the spatial grid and, for Model 1, tiled over time so same-position tokens start equal; blocks
    ``i < depth`` and the final norm copied (``spatial_norm`` for Model 2). Head, TokenLearner and
    the temporal encoder keep their fresh initialisation.
    """
    cfg = model.cfg
    state = read_state_dict(source) if isinstance(source, str) else source
    nt, nh, nw = cfg.grid
    t, h, w = cfg.tubelet
    new: dict[str, Tensor] = {}
    w2d = state["patch_embed.proj.weight"].float()
    if w2d.shape[0] != cfg.embed_dim:
        raise ValueError(f"pretrained width {w2d.shape[0]} != model.embed_dim {cfg.embed_dim}")
    if tuple(w2d.shape[-2:]) != (h, w):
        w2d = resample_patch_embed(w2d, [h, w])
    new["patch_embed.proj.weight"] = inflate_patch_kernel(w2d, t, embed_init or cfg.embed_init)
    if "patch_embed.proj.bias" in state:
        new["patch_embed.proj.bias"] = state["patch_embed.proj.bias"]
    spatial = _spatial_pos_embed(state["pos_embed"], (nh, nw))
    new["pos_embed"] = spatial.repeat(1, nt, 1) if cfg.variant == "joint" else spatial
    norm = "norm" if cfg.variant == "joint" else "spatial_norm"
    too_deep = []
    for key, value in state.items():
        if key.startswith("blocks."):
            if int(key.split(".")[1]) < cfg.depth:
                new[f"encoder.{key}"] = value
            else:
                too_deep.append(key)
        elif key in ("norm.weight", "norm.bias"):
            new[key.replace("norm", norm, 1)] = value
    own = model.state_dict()
    skipped = sorted(k for k in new if k not in own)
    for k in list(new):
        if k in own and own[k].shape != new[k].shape:
            raise ValueError(f"pretrained {k} has shape {list(new[k].shape)}, the model {list(own[k].shape)}")
    loaded = sorted(k for k in new if k in own)
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(new[k])
    ignored = too_deep + sorted(
        k for k in state if not (k.startswith("blocks.") or k.startswith("patch_embed") or k in ("pos_embed", "norm.weight", "norm.bias"))
    )
    log.info("ViViT: loaded %d tensors from image weights; unused: %s", len(loaded), skipped + ignored)
    return {"loaded": loaded, "skipped": skipped + ignored}
