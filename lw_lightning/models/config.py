"""Model configuration: one dataclass for LookWhere, the full-resolution ViT and the
TokenLearner-ViT, plus presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

#: Named architectures. ``small``/``base`` have DINOv2-reg4 shapes (patch 14, 4 registers,
#: LayerScale), so DINOv2 and the official LookWhere weights fit them.
PRESETS: dict[str, dict] = {
    # CPU tests and demos; trained from scratch, hence no LayerScale.
    "tiny": dict(
        img_size=[224, 224],
        patch_size=14,
        embed_dim=96,
        depth=4,
        num_heads=3,
        reg_tokens=4,
        init_values=None,
        selector_depth=2,
        selector_img_size=56,
    ),
    # ViT-S/14 reg4 (the official ViT-S yaml: 98 px selector with 6 blocks).
    "small": dict(
        img_size=[518, 518],
        patch_size=14,
        embed_dim=384,
        depth=12,
        num_heads=6,
        reg_tokens=4,
        init_values=1e-5,
        selector_depth=6,
        selector_img_size=98,
    ),
    # ViT-B/14 reg4 (the released lookwhere_dinov2.pt: 3-block selector at 154 px).
    "base": dict(
        img_size=[518, 518],
        patch_size=14,
        embed_dim=768,
        depth=12,
        num_heads=12,
        reg_tokens=4,
        init_values=1e-5,
        selector_depth=3,
        selector_img_size=154,
    ),
    # The TokenLearner paper's backbones (original ViT layout: patch 16, CLS, no registers, no
    # LayerScale), so timm's ``vit_base_patch16_224.*`` / ``vit_large_patch16_224.*`` weights fit.
    "vit_b16": dict(
        img_size=[224, 224],
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        reg_tokens=0,
        init_values=None,
        selector_depth=3,
        selector_img_size=64,
    ),
    "vit_l16": dict(
        img_size=[224, 224],
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        reg_tokens=0,
        init_values=None,
        selector_depth=3,
        selector_img_size=64,
    ),
}

ARCHS = ("lookwhere", "vit", "tokenlearner")
RESIZE_MODES = ("official", "pretraining")
TOKENLEARNER_POOLS = ("cls", "gap")


@dataclass
class ModelConfig:
    """Architecture of a LookWhere model (``arch: lookwhere``), its full-res ViT (``arch: vit``) or
    a ViT with TokenLearner (``arch: tokenlearner``, the ``tokenlearner_*`` fields).

    Values not given are taken from ``preset``.
    """

    arch: str = "lookwhere"
    preset: str = "base"
    img_size: list[int] = field(default_factory=lambda: [518, 518])
    patch_size: int = 14
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    reg_tokens: int = 4
    init_values: float | None = 1e-5
    drop_path_rate: float = 0.0
    # selector ("where")
    selector_depth: int = 3
    #: int: side of a square low-res input, or the short side for non-square inputs; or [h, w].
    selector_img_size: int | list[int] = 154
    #: sub-patch block side of the selector head; None: ceil(high-res grid / low-res grid).
    selector_r: int | None = None
    #: LookWhere resize semantics (selector image and map resizes, positional-embedding
    #: resampling, K-NN tie-break). "official": the released PyTorch inference code
    #: (antofuller/lookwhere ``LookWhereDownstream``): no antialiasing, a square selector input
    #: for an int ``selector_img_size``, pos-embeds bicubic without antialias, K-NN neighbours the
    #: first of a full ``argsort``. "pretraining": the JAX pretraining's antialiased resizes, the
    #: aspect ratio kept for non-square inputs, timm's antialiased pos-embed resampling, top-k
    #: neighbours. None: what ``pretrained`` decides ("official" for the released
    #: ``lookwhere_dinov2.pt``, the recorded mode for our exports), else "pretraining".
    resize_mode: str | None = None
    # extractor ("what")
    #: default number of selected patches: int count or float fraction of the grid.
    k: int | float = 0.1
    #: neighbours of the K-NN inverse-distance upsampling of dense features.
    knn: int = 5
    # TokenLearner-ViT (``arch: tokenlearner``)
    #: where TokenLearner goes: an int block index L (blocks 0..L-1 see every patch) or a float
    #: fraction of the depth in [0, 1) (0.25 of 12 blocks: L = 3).
    tokenlearner_loc: int | float = 0.5
    #: S, the learned tokens that replace the patch tokens from block L on.
    tokenlearner_tokens: int = 8
    #: "v1.1" (MLP + softmax over space, scenic's default) or "v1.0" (the paper's conv + sigmoid).
    tokenlearner_version: str = "v1.1"
    #: TokenLearner -> block -> TokenFuser at every block >= L (the token count stays N).
    tokenlearner_fuser: bool = False
    #: classifier input: "cls" (the CLS token, as the other archs) or "gap" (mean over tokens, scenic).
    tokenlearner_pool: str = "cls"
    #: local file with pretrained weights: official LookWhere layout (arch lookwhere), a timm state
    #: dict, or an ImageClassifier ``.ckpt`` of a full-res ViT (arch vit / tokenlearner).
    pretrained: str | None = None
    #: timm model name whose checkpoint filter reads ``pretrained`` (e.g. an AugReg ``.npz`` or a
    #: DINOv2 ``.pth``); None: ``pretrained`` is read as a state dict / ``.ckpt`` directly.
    pretrained_name: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}, got {self.arch!r}")
        self.img_size = list(self.img_size) if not isinstance(self.img_size, int) else [self.img_size] * 2
        for side in self.img_size:
            if side % self.patch_size:
                raise ValueError(f"model.img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.resize_mode is not None and self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"model.resize_mode must be one of {RESIZE_MODES} (or null), got {self.resize_mode!r}")
        if self.arch == "tokenlearner":
            self.tokenlearner_block()  # a bad insertion point fails when the config is built
            if self.tokenlearner_version not in ("v1.0", "v1.1"):
                raise ValueError(f"model.tokenlearner_version must be 'v1.0' or 'v1.1', got {self.tokenlearner_version!r}")
            if self.tokenlearner_pool not in TOKENLEARNER_POOLS:
                raise ValueError(f"model.tokenlearner_pool must be one of {TOKENLEARNER_POOLS}, got {self.tokenlearner_pool!r}")
            if (
                isinstance(self.tokenlearner_tokens, bool)
                or not isinstance(self.tokenlearner_tokens, int)
                or self.tokenlearner_tokens < 1
            ):
                raise ValueError(
                    f"model.tokenlearner_tokens={self.tokenlearner_tokens!r}: the number of learned tokens S must be an int >= 1"
                )

    def tokenlearner_block(self) -> int:
        """The block index L before which TokenLearner runs (``tokenlearner_loc`` resolved)."""
        loc, depth = self.tokenlearner_loc, self.depth
        rule = f"a block index 0..{depth} or a fraction of the depth in [0, 1)"
        if isinstance(loc, bool) or not isinstance(loc, (int, float)):
            raise ValueError(f"model.tokenlearner_loc={loc!r}: {rule}")
        if isinstance(loc, float):
            if not 0.0 <= loc < 1.0:
                raise ValueError(f"model.tokenlearner_loc={loc}: {rule}")
            # floored, after rounding away float noise (1/3 of 12 blocks is 4, not 3.9999 -> 3)
            block = int(round(loc * depth, 6))
        else:
            if not 0 <= loc <= depth:
                raise ValueError(f"model.tokenlearner_loc={loc} is outside the {depth} blocks ({rule})")
            block = loc
        if block == depth and (self.tokenlearner_fuser or self.tokenlearner_pool == "cls"):
            # after the last block nothing reads the learned tokens but a GAP head
            why = "the fuser wraps blocks" if self.tokenlearner_fuser else "the CLS head never sees the learned tokens"
            raise ValueError(
                f"model.tokenlearner_loc={loc} puts TokenLearner after the last block, where {why} ({rule} below {depth})"
            )
        return block

    @property
    def grid(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def resize(self) -> str:
        """``resize_mode`` resolved: "pretraining" unless set (a pretrained file is read by
        :func:`~lw_lightning.models.checkpoint.resolve_pretrained_config` before building)."""
        return self.resize_mode or "pretraining"

    @property
    def antialias(self) -> bool:
        """Whether selector resizes and pos-embed resampling antialias (pretraining mode)."""
        return self.resize == "pretraining"

    @property
    def knn_tie_break(self) -> str:
        """How :func:`~lw_lightning.models.knn_upsample.knn_upsample` picks among equal distances."""
        return "argsort" if self.resize == "official" else "topk"

    def selector_size_for(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Low-res selector input size for a high-res ``hw`` input (multiples of the patch)."""
        if not isinstance(self.selector_img_size, int):
            h, w = self.selector_img_size
            return (int(h), int(w))
        side = self.selector_img_size
        h, w = hw
        # the released code resizes every input to a fixed square (its selector's native grid)
        if h == w or self.resize == "official":
            return (side, side)
        p = self.patch_size
        # keep the aspect ratio: the short side gets ``side``, the long one the nearest multiple
        if h < w:
            return (side, max(p, round(side * w / h / p) * p))
        return (max(p, round(side * h / w / p) * p), side)

    def default_selector_r(self) -> int:
        lo = self.selector_size_for(tuple(self.img_size))  # type: ignore[arg-type]
        gh, gw = self.grid
        return max(math.ceil(gh / (lo[0] // self.patch_size)), math.ceil(gw / (lo[1] // self.patch_size)))


def model_config(preset: str = "base", **overrides) -> ModelConfig:
    """Build a :class:`ModelConfig` from a named preset and explicit overrides."""
    if preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(preset, list(PRESETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown model preset '{preset}'{hint}; choose from {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    if "antialias" in overrides:  # the switch before resize_mode existed
        raise ValueError(
            "model.antialias is replaced by model.resize_mode: 'official' (no antialiasing, the released code) or 'pretraining'"
        )
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}")
    return ModelConfig(**{**PRESETS[preset], **overrides, "preset": preset})


def resolve_k(k: int | float, n: int) -> int:
    """Number of patches to keep: an int count (capped at ``n``) or a float fraction of ``n``."""
    if isinstance(k, bool):
        raise TypeError("k must be an int count or a float fraction")
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise ValueError(f"fractional k must lie in (0, 1], got {k}")
        # round first so 0.29 * 100 = 28.999... still counts as 29
        return max(1, int(round(k * n, 6)))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(int(k), n)


def check_k(k: int | float | None, n: int, name: str) -> None:
    """Raise ValueError (one line, naming ``name`` and ``n``) unless ``k`` is None, an int count
    1..n or a float fraction in (0, 1] of the ``n`` patches. Used when a module is built, so a
    bad k fails before training starts rather than at the first step that uses it (and a count
    above ``n`` is not silently capped)."""
    if k is None:
        return
    rule = f"k is a count 1..{n} or a fraction in (0, 1] of the {n} patches"
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"{name}={k!r}: {rule}")
    if isinstance(k, int) and k > n:
        raise ValueError(f"{name}={k} is more than the {n} patches of the model ({rule})")
    if (isinstance(k, float) and not 0.0 < k <= 1.0) or (isinstance(k, int) and k < 1):
        raise ValueError(f"{name}={k!r}: {rule}")
