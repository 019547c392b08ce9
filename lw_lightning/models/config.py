"""Model configuration: one dataclass for LookWhere and the full-resolution ViT, plus presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

#: Named architectures. ``small``/``base`` have DINOv2-reg4 shapes (patch 14, 4 registers,
#: LayerScale), so DINOv2 and the official LookWhere weights fit them.
PRESETS: dict[str, dict] = {
    # CPU tests and demos; trained from scratch, hence no LayerScale.
    "tiny": dict(
        img_size=[224, 224], patch_size=14, embed_dim=96, depth=4, num_heads=3, reg_tokens=4,
        init_values=None, selector_depth=2, selector_img_size=56,
    ),
    # ViT-S/14 reg4 (the official ViT-S yaml: 98 px selector with 6 blocks).
    "small": dict(
        img_size=[518, 518], patch_size=14, embed_dim=384, depth=12, num_heads=6, reg_tokens=4,
        init_values=1e-5, selector_depth=6, selector_img_size=98,
    ),
    # ViT-B/14 reg4 (the released lookwhere_dinov2.pt: 3-block selector at 154 px).
    "base": dict(
        img_size=[518, 518], patch_size=14, embed_dim=768, depth=12, num_heads=12, reg_tokens=4,
        init_values=1e-5, selector_depth=3, selector_img_size=154,
    ),
}

ARCHS = ("lookwhere", "vit")


@dataclass
class ModelConfig:
    """Architecture of a LookWhere model (``arch: lookwhere``) or its full-res ViT (``arch: vit``).

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
    #: antialias the image->low-res and map->grid resizes (JAX pretraining did; the released
    #: PyTorch inference code does not: set False for output parity with it).
    antialias: bool = True
    # extractor ("what")
    #: default number of selected patches: int count or float fraction of the grid.
    k: int | float = 0.1
    #: neighbours of the K-NN inverse-distance upsampling of dense features.
    knn: int = 5
    #: local file with pretrained weights (official LookWhere layout or a timm state dict).
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}, got {self.arch!r}")
        self.img_size = list(self.img_size) if not isinstance(self.img_size, int) else [self.img_size] * 2
        for side in self.img_size:
            if side % self.patch_size:
                raise ValueError(f"model.img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    def selector_size_for(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Low-res selector input size for a high-res ``hw`` input (multiples of the patch)."""
        if not isinstance(self.selector_img_size, int):
            h, w = self.selector_img_size
            return (int(h), int(w))
        side = self.selector_img_size
        h, w = hw
        if h == w:
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
