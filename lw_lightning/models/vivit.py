"""ViViT (Arnab et al., 2021) on timm blocks, with TokenLearner per temporal slice.

* ``variant="joint"`` (Model 1): tubelet Conv3d -> tokens in (t, h, w) order (+ a CLS token with
  ``classifier="token"``) + one learned posemb over all ``P + nt·nh·nw`` tokens -> blocks ``0…L-1``
  on every token -> TokenLearner on each temporal slice (``[B·nt, nh·nw, C] -> [B, nt·S, C]``; the
  CLS token passes by) -> remaining blocks with joint space-time attention -> LayerNorm -> CLS token
  or mean over tokens -> zero-initialised head. scenic's TokenLearner-ViViT is the ``gap`` form (P11);
  ``token`` is the layout of scenic's / HF's ViViT-B K400 checkpoint (see :mod:`.hf_vivit`).
* ``variant="factorised"`` (Model 2, scenic ``SpaceTimeViViT``): the spatial encoder runs on each
  temporal slice (``[B·nt, P + nh·nw, C]``, shared weights, one CLS parameter for all slices) and
  ends with its LayerNorm; each slice is then summarised by its CLS token, the mean of its tokens
  (scenic: norm first, then the mean), or S TokenLearner tokens. A randomly initialised temporal
  encoder with a learned per-slice time embedding (and its own CLS token) attends over them.

The tubelet conv has VALID padding: frames / pixels that do not fill a whole tubelet are dropped
(224 px with 10 px tubelets: 22×22 tokens). Blocks trained from scratch get scenic's init
(:func:`scenic_block_init_`), the activation is tanh GELU unless ``activation="gelu"``.

Image-ViT initialisation (:func:`load_image_vit`): tubelet kernel by central frame (default) or
averaging, spatial posemb resampled to the grid and tiled over time, CLS token and its posemb,
blocks and final norm copied. HF ViViT video weights: :func:`.hf_vivit.load_hf_vivit`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import Block
from torch import Tensor

from .tokenlearner import LayerNorm, TokenLearnerEncoder, build_token_learner
from .vivit_presets import PRESETS

log = logging.getLogger(__name__)

VARIANTS = ("joint", "factorised")
EMBED_INITS = ("central", "average")
CLASSIFIERS = ("gap", "token")
#: block MLP activations: flax's / scenic's ``nn.gelu`` and HF's ``gelu_fast`` are the tanh form.
ACTIVATIONS: dict[str, type[nn.Module] | partial] = {"gelu_tanh": partial(nn.GELU, approximate="tanh"), "gelu": nn.GELU}


@dataclass
class ViViTConfig:
    """ViViT architecture. Values not given come from ``preset`` (see :func:`vivit_config`)."""

    preset: str = "base"
    variant: str = "joint"
    img_size: int = 224
    num_frames: int = 32
    #: tubelet (t, h, w): Conv3d kernel = stride, VALID padding (a remainder is dropped).
    tubelet: list[int] = field(default_factory=lambda: [2, 16, 16])
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    #: factorised only: layers of the (randomly initialised) temporal encoder.
    temporal_depth: int = 4
    #: "gap": mean over the final tokens; "token": a CLS token (zero init, its own posemb) read
    #: after the final LayerNorm (scenic ``classifier='token'``, HF ``VivitForVideoClassification``).
    classifier: str = "gap"
    #: block MLP activation: "gelu_tanh" (scenic / flax, HF "gelu_fast") or "gelu" (exact erf).
    activation: str = "gelu_tanh"
    #: TokenLearner tokens per temporal slice; 0 disables TokenLearner.
    num_tokens: int = 0
    #: blocks run on all tokens before TokenLearner; None: half the depth (joint) / after the whole
    #: spatial encoder, as its per-slice summary (factorised). ``depth`` in Model 1: no TokenLearner
    #: (scenic's semantics).
    tokenlearner_loc: int | None = None
    tokenlearner_version: str = "v1.1"
    use_fuser: bool = False
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    #: how a 2-D patch kernel becomes a tubelet kernel when loading image weights.
    embed_init: str = "central"
    #: weights: an image ViT (a local .safetensors / .pth / .pt file or a timm model name), or an
    #: HF ViViT (a snapshot folder with config.json + model.safetensors, or ``hf:<repo id>``).
    pretrained: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (
            ("variant", VARIANTS),
            ("embed_init", EMBED_INITS),
            ("classifier", CLASSIFIERS),
            ("activation", tuple(ACTIVATIONS)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.tubelet) != 3 or any(int(v) < 1 for v in self.tubelet):
            raise ValueError(f"model.tubelet must be [t, h, w] of positive sizes, got {self.tubelet}")
        if min(self.grid) < 1:
            raise ValueError(
                f"model.tubelet {self.tubelet} is larger than the input ({self.num_frames} frames of {self.img_size}^2)"
            )
        if (
            self.variant == "factorised"
            and self.classifier == "token"
            and self.num_tokens > 0
            and self.tokenlearner_loc in (None, self.depth)
        ):
            raise ValueError(
                "model.classifier=token reads each slice's CLS token, so a TokenLearner after the spatial encoder would be unused: "
                f"set model.tokenlearner_loc below {self.depth} or model.classifier=gap"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (nt, nh, nw), floored as VALID padding does."""
        t, h, w = self.tubelet
        return (self.num_frames // t, self.img_size // h, self.img_size // w)

    @property
    def num_prefix(self) -> int:
        """CLS tokens before the patch tokens (1 with ``classifier="token"``)."""
        return 1 if self.classifier == "token" else 0


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


def lecun_normal_(weight: Tensor) -> Tensor:
    """flax's default kernel init: truncated normal (±2σ) with variance 1 / fan_in."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # the stddev of a unit normal truncated at ±2
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class TubeletEmbed(nn.Module):
    """Conv3d with kernel = stride = (t, h, w): ``[B, C, T, H, W] -> [B, nt·nh·nw, D]``, (t h w) order.

    Like scenic's VALID padding, frames and pixels beyond the last whole tubelet are dropped.
    Initialised as flax's ``nn.Conv`` (lecun-normal kernel, zero bias).
    """

    def __init__(self, tubelet: tuple[int, int, int], embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.tubelet = tubelet
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=tubelet, stride=tubelet)
        lecun_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, video: Tensor) -> Tensor:
        return self.proj(video).flatten(2).transpose(1, 2)  # [B, D, nt, nh, nw] -> time-major tokens (P8)


def scenic_block_init_(block: Block) -> Block:
    """scenic's ``EncoderBlock`` init on a timm block: xavier-uniform q, k, v and output kernels
    with zero biases (``MultiHeadDotProductAttention(kernel_init=xavier_uniform)``; flax computes
    the fans of each of q / k / v as a ``[D, D]`` matrix, so the fused ``qkv`` is done in thirds),
    xavier-uniform MLP kernels with N(0, 1e-6) biases (``MlpBlock``), LayerNorms at 1 / 0."""
    with torch.no_grad():
        for part in block.attn.qkv.weight.chunk(3, dim=0):
            nn.init.xavier_uniform_(part)
        nn.init.zeros_(block.attn.qkv.bias)
        nn.init.xavier_uniform_(block.attn.proj.weight)
        nn.init.zeros_(block.attn.proj.bias)
        for fc in (block.mlp.fc1, block.mlp.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)
        for norm in (block.norm1, block.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)
    return block


def _blocks(cfg: ViViTConfig, depth: int) -> list[nn.Module]:
    dpr = [cfg.drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
    act = ACTIVATIONS[cfg.activation]
    return [
        scenic_block_init_(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                qkv_bias=True,
                proj_drop=cfg.dropout,
                drop_path=dpr[i],
                act_layer=act,
                norm_layer=LayerNorm,
            )
        )
        for i in range(depth)
    ]


class ViViT(nn.Module):
    """ViViT Model 1 or Model 2 (``cfg.variant``) with optional TokenLearner; ``[B, 3, T, H, W] -> logits``."""

    def __init__(self, cfg: ViViTConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        nt, nh, nw = cfg.grid
        d, p = cfg.embed_dim, cfg.num_prefix
        self.patch_embed = TubeletEmbed(tuple(cfg.tubelet), d)  # type: ignore[arg-type]
        self.pos_drop = nn.Dropout(cfg.dropout)
        tl = dict(num_tokens=cfg.num_tokens, version=cfg.tokenlearner_version, use_fuser=cfg.use_fuser, dropout=cfg.dropout)
        if p:  # one CLS parameter, zero-initialised (shared by all slices in Model 2)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.token_learner: nn.Module | None = None
        if cfg.variant == "joint":
            self.pos_embed = nn.Parameter(torch.empty(1, p + nt * nh * nw, d))
            self.encoder = TokenLearnerEncoder(_blocks(cfg, cfg.depth), d, loc=cfg.tokenlearner_loc, **tl)
            if cfg.num_tokens > 0 and self.encoder.num_tokens == 0:
                log.info("ViViT: tokenlearner_loc=%d = depth: no TokenLearner (scenic's semantics)", self.encoder.loc)
        else:
            self.pos_embed = nn.Parameter(torch.empty(1, p + nh * nw, d))
            pool = cfg.num_tokens > 0 and cfg.tokenlearner_loc in (None, cfg.depth)
            loc = cfg.depth if cfg.tokenlearner_loc is None else cfg.tokenlearner_loc
            self.encoder = TokenLearnerEncoder(_blocks(cfg, cfg.depth), d, loc=loc, **tl)  # loc = depth: none inside
            self.spatial_norm = LayerNorm(d)
            if pool:  # S tokens per slice summarise the normalised spatial output (instead of the mean)
                self.token_learner = build_token_learner(cfg.tokenlearner_version, d, cfg.num_tokens, cfg.dropout)
            self.time_embed = nn.Parameter(torch.empty(1, nt, 1, d))
            nn.init.normal_(self.time_embed, std=0.02)
            if p:
                # scenic's temporal CLS (zeros) plus its position embedding (N(0, 0.02)): two constants
                # added to each other, kept as their sum
                self.temporal_cls_token = nn.Parameter(torch.empty(1, 1, d))
                nn.init.normal_(self.temporal_cls_token, std=0.02)
            self.temporal_encoder = nn.Sequential(*_blocks(cfg, cfg.temporal_depth))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.norm = LayerNorm(d)
        self.head = nn.Linear(d, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # cfg.pretrained is not read here: no constructor reads a file
        # (:func:`~.video_checkpoint.vivit_with_weights` builds and loads)

    def _slice_tokens(self) -> int:
        """Tokens per temporal slice that enter the temporal encoder (Model 2)."""
        c = self.cfg
        if c.classifier == "token" or c.num_tokens == 0:
            return 1
        return c.num_tokens

    @property
    def num_output_tokens(self) -> int:
        """Tokens entering the last block (what TokenLearner saves compute on), CLS included."""
        nt, nh, nw = self.cfg.grid
        if self.cfg.variant == "joint":
            return self.cfg.num_prefix + self.encoder.output_tokens(nt * nh * nw, nt)
        return self.cfg.num_prefix + nt * self._slice_tokens()

    def set_activation(self, name: str) -> None:
        """Swap every block's MLP activation (``gelu_tanh`` / ``gelu``); weights are unchanged."""
        if name not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {tuple(ACTIVATIONS)}, got {name!r}")
        for module in self.modules():
            if isinstance(module, Block):
                module.mlp.act = ACTIVATIONS[name]()
        self.cfg = dataclasses.replace(self.cfg, activation=name)

    def _check_input(self, video: Tensor) -> None:
        c = self.cfg
        want = (3, c.num_frames, c.img_size, c.img_size)
        if tuple(video.shape[1:]) != want:
            raise ValueError(
                f"ViViT expects video [B, 3, T, H, W] = [B, {', '.join(map(str, want[1:]))}], got {list(video.shape)}"
            )

    def _with_cls(self, x: Tensor) -> Tensor:
        if not self.cfg.num_prefix:
            return x
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def forward_features(self, video: Tensor) -> Tensor:
        """Final normalised tokens ``[B, P + N, D]`` (P = 1 CLS token with ``classifier="token"``)."""
        self._check_input(video)
        nt, nh, nw = self.cfg.grid
        p = self.cfg.num_prefix
        x = self.patch_embed(video)
        b, _, d = x.shape
        if self.cfg.variant == "joint":
            x = self.pos_drop(self._with_cls(x) + self.pos_embed)
            return self.norm(self.encoder(x, temporal_dims=nt, grid=(nh, nw), num_prefix=p))
        # factorised: every temporal slice through the spatial encoder with shared weights
        x = self.pos_drop(self._with_cls(x.reshape(b * nt, nh * nw, d)) + self.pos_embed)
        x = self.spatial_norm(self.encoder(x, temporal_dims=1, grid=(nh, nw), num_prefix=p))
        if p:
            x = x[:, :1]  # the slice's CLS token
        elif self.token_learner is not None:
            x = self.token_learner(x, (nh, nw))  # S tokens per slice
        elif self.cfg.num_tokens == 0:
            x = x.mean(dim=1, keepdim=True)  # scenic classifier='gap': encoder_norm, then the mean
        x = self.pos_drop(x.reshape(b, nt, -1, d) + self.time_embed).reshape(b, -1, d)
        if p:
            x = torch.cat([self.temporal_cls_token.expand(b, -1, -1), x], dim=1)
        return self.norm(self.temporal_encoder(x))

    def forward(self, video: Tensor) -> Tensor:
        x = self.forward_features(video)
        return self.head(x[:, 0] if self.cfg.classifier == "token" else x.mean(dim=1))


# ------------------------------------------------------------------------------------------------
# initialisation from an image ViT
# ------------------------------------------------------------------------------------------------


def read_state_dict(source: str) -> dict[str, Tensor]:
    """Weights of an image ViT from a local file, or from timm by model name (needs the timm cache
    or network). Checkpoints that nest the weights under ``state_dict`` / ``model`` are unwrapped."""
    path = Path(source).expanduser()
    if path.is_file():
        from .checkpoint import read_weights  # the one reader of weights files (clear errors)

        state = read_weights(path, "pretrained weights file")
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        return {k.removeprefix("module."): v for k, v in state.items()}
    if any(sep in source for sep in ("/", "\\")) or path.suffix in (".pth", ".pt", ".safetensors", ".bin"):
        raise FileNotFoundError(f"pretrained weights file not found: {source}")
    import timm

    return timm.create_model(source.removeprefix("timm:"), pretrained=True, num_classes=0).state_dict()


def _split_pos_embed(pos: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A timm posemb -> (its prefix positions ``[1, P, D]`` (CLS / registers; P may be 0), its
    patch grid resampled to ``grid``)."""
    n = pos.shape[1]
    prefix = next((p for p in range(9) if math.isqrt(n - p) ** 2 == n - p), None)
    if prefix is None:
        raise ValueError(f"cannot read a square patch grid from a pos_embed with {n} positions")
    side = math.isqrt(n - prefix)
    spatial = resample_abs_pos_embed(pos[:, prefix:].float(), new_size=list(grid), old_size=[side, side], num_prefix_tokens=0)
    return pos[:, :prefix].float(), spatial


def load_image_vit(model: ViViT, source: str | dict[str, Tensor], embed_init: str | None = None) -> dict[str, list[str]]:
    """Initialise ``model`` from image-ViT weights (timm key names). Returns loaded / skipped keys.

    Tubelet kernel inflated by ``embed_init`` (default ``model.cfg.embed_init``); posemb resampled to
    the spatial grid and, for Model 1, tiled over time so same-position tokens start equal; with
    ``classifier="token"`` the CLS token and its position (zero when the image ViT adds none to its
    CLS) are copied; blocks ``i < depth`` and the final norm copied (``spatial_norm`` for Model 2).
    Head, TokenLearner and the temporal encoder keep their fresh initialisation.
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
    prefix_pos, spatial = _split_pos_embed(state["pos_embed"], (nh, nw))
    pos = spatial.repeat(1, nt, 1) if cfg.variant == "joint" else spatial
    used = {"pos_embed", "norm.weight", "norm.bias"}
    if cfg.num_prefix and "cls_token" in state:
        new["cls_token"] = state["cls_token"]
        cls_pos = prefix_pos[:, :1] if prefix_pos.shape[1] else torch.zeros_like(pos[:, :1])
        pos = torch.cat([cls_pos, pos], dim=1)
        used.add("cls_token")
    elif cfg.num_prefix:  # an image ViT without a CLS token: the CLS and its position keep their init
        pos = torch.cat([model.pos_embed[:, :1].detach().float(), pos], dim=1)
    new["pos_embed"] = pos
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
    ignored = too_deep + sorted(k for k in state if not (k.startswith(("blocks.", "patch_embed")) or k in used))
    log.info("ViViT: loaded %d tensors from image weights; unused: %s", len(loaded), skipped + ignored)
    return {"loaded": loaded, "skipped": skipped + ignored}
