"""Every architecture the project trains, by name: ``create_model(name, pretrained=None, **overrides)``.

Names encode the settings, as timm's and scenic's do: ``lookwhere_base_patch14_reg4_994`` is
LookWhere-B (ViT-B/14 with 4 registers, the released 3-block selector at 154 px) at 994 px;
``vivit_base_16x2_224_32f_tl8_at6`` is ViViT-B/16x2 on 32 frames of 224 px with 8 TokenLearner
tokens per temporal slice after block 6; ``vivit_fe_*`` is ViViT Model 2 (factorised encoder).
Each name is a family (which config and builder) plus config values; ``**overrides`` change any
of them (``img_size=[518, 742]``, ``k=0.05``, ``drop_path_rate=0.1``).

``pretrained`` is a local file (or, for ViViT, an HF snapshot folder) in any layout the family
reads. What the file decides (LookWhere's selector r and resize mode) is read from it before the
model is built, so the released ``lookwhere_dinov2.pt`` loads at any input size:
``create_model("lookwhere_base_patch14_reg4_994", pretrained="lookwhere_dinov2.pt")``.

The names are also in timm's registry once :mod:`lw_lightning` is imported:
``timm.create_model("lookwhere_base_patch14_reg4_518", pretrained=True,
pretrained_cfg_overlay={"file": "lookwhere_dinov2.pt"})`` and ``timm.list_models("lookwhere*")``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model

from ..errors import ConfigError

#: families: which config a name's values go to, and how the model is built
FAMILIES = ("image", "vivit", "video_lookwhere")


@dataclass(frozen=True)
class ModelSpec:
    """A registered name: its family and the config values it stands for."""

    name: str
    family: str
    config: dict[str, Any]
    summary: str

    def resolved(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The config values with ``overrides`` applied (a registry name is a preset plus values)."""
        return {**self.config, **overrides}


_SPECS: dict[str, ModelSpec] = {}


def _add(name: str, family: str, summary: str, **config: Any) -> None:
    _SPECS[name] = ModelSpec(name, family, config, summary)


# --- images: LookWhere, its full-resolution ViT, the TokenLearner-ViT ------------------------------
_IMAGE_SIZES = {
    "tiny": ("patch14", [224]),  # the CPU demo's size
    "small": ("patch14_reg4", [518]),
    "base": ("patch14_reg4", [224, 518, 994]),  # ImageNet, ADE20K, Traffic Signs (the paper's)
}
for _size, (_patch, _sides) in _IMAGE_SIZES.items():
    for _side in _sides:
        _hw = [_side, _side]
        _add(
            f"lookwhere_{_size}_{_patch}_{_side}",
            "image",
            f"LookWhere-{_size} at {_side} px",
            arch="lookwhere",
            preset=_size,
            img_size=_hw,
        )
        _add(
            f"fullres_vit_{_size}_{_patch}_{_side}",
            "image",
            f"the full-resolution ViT-{_size} at {_side} px",
            arch="vit",
            preset=_size,
            img_size=_hw,
        )
_add(
    "fullres_vit_base_patch16_224",
    "image",
    "ViT-B/16 at 224 px (timm AugReg layout)",
    arch="vit",
    preset="vit_b16",
    img_size=[224, 224],
)
_add(
    "fullres_vit_large_patch16_224",
    "image",
    "ViT-L/16 at 224 px (timm AugReg layout)",
    arch="vit",
    preset="vit_l16",
    img_size=[224, 224],
)
for _at in (25, 50, 75):
    _add(
        f"tokenlearner_vit_base_patch16_224_tl8_at{_at}",
        "image",
        f"ViT-B/16 with 8 TokenLearner tokens at {_at}% of the depth",
        arch="tokenlearner",
        preset="vit_b16",
        img_size=[224, 224],
        tokenlearner_loc=_at / 100,
        tokenlearner_tokens=8,
    )
_add(
    "tokenlearner_vit_large_patch16_512_tl16_at50",
    "image",
    "ViT-L/16 at 512 px with 16 TokenLearner tokens at half the depth",
    arch="tokenlearner",
    preset="vit_l16",
    img_size=[512, 512],
    tokenlearner_loc=0.5,
    tokenlearner_tokens=16,
)
_add(
    "tokenlearner_vit_base_patch14_reg4_994_tl16_at25",
    "image",
    "ViT-B/14 at 994 px with 16 TokenLearner tokens at a quarter of the depth (Traffic Signs)",
    arch="tokenlearner",
    preset="base",
    img_size=[994, 994],
    tokenlearner_loc=0.25,
    tokenlearner_tokens=16,
)
_add(
    "tokenlearner_vit_tiny_patch14_224_tl8_at50",
    "image",
    "the demo's tiny ViT with 8 TokenLearner tokens at half the depth",
    arch="tokenlearner",
    preset="tiny",
    img_size=[224, 224],
    tokenlearner_loc=0.5,
    tokenlearner_tokens=8,
)

# --- video: ViViT Model 1 / Model 2, with and without TokenLearner; video LookWhere ---------------
_add("vivit_tiny_8x2_32_8f", "vivit", "ViViT-tiny (tests)", preset="tiny")
_add(
    "vivit_tiny_8x2_64_16f",
    "vivit",
    "the video demo's ViViT-tiny on 16 frames of 64 px",
    preset="tiny",
    img_size=64,
    num_frames=16,
)
_add(
    "vivit_tiny_8x2_32_8f_tl4_at2",
    "vivit",
    "the video demo's ViViT-tiny with 4 tokens after block 2",
    preset="tiny",
    num_tokens=4,
    tokenlearner_loc=2,
)
for _size in ("base", "large"):
    _add(f"vivit_{_size}_16x2_224_32f", "vivit", f"ViViT-{_size}/16x2 Model 1 (joint attention)", preset=_size)
    _add(
        f"vivit_fe_{_size}_16x2_224_32f",
        "vivit",
        f"ViViT-{_size}/16x2 Model 2 (factorised encoder)",
        preset=_size,
        variant="factorised",
    )
for _tokens in (8, 16):
    _add(
        f"vivit_base_16x2_224_32f_tl{_tokens}_at6",
        "vivit",
        f"ViViT-B/16x2 with {_tokens} TokenLearner tokens per slice after block 6",
        preset="base",
        num_tokens=_tokens,
        tokenlearner_loc=6,
    )
_add(
    "vivit_fe_base_16x2_224_32f_tl8",
    "vivit",
    "ViViT-B/16x2 Model 2 summarising each slice with 8 TokenLearner tokens",
    preset="base",
    variant="factorised",
    num_tokens=8,
)
_add(
    "lookwhere_video_base_16x2_224_32f",
    "video_lookwhere",
    "video LookWhere-B: a 3-block selector on 16 frames of 112 px, ViViT-B/16x2 extractor, one tubelet per slice at least",
    preset="base",
    selector_num_frames=16,
    selector_img_size=112,
    slice_quota=1,
)
_add(
    "lookwhere_video_tiny_8x2_64_16f",
    "video_lookwhere",
    "the video demo's LookWhere-tiny on 16 frames of 64 px",
    preset="tiny",
    img_size=64,
    num_frames=16,
    selector_num_frames=8,
    selector_img_size=32,
)


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered name; a one-line :class:`ConfigError` (with the closest names) otherwise."""
    if name not in _SPECS:
        import difflib

        close = difflib.get_close_matches(name, list(_SPECS), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; list_models() names them all")
    return _SPECS[name]


def list_models(pattern: str = "*") -> list[str]:
    """The registered names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _SPECS if fnmatch.fnmatchcase(n, pattern))


def model_config_of(name: str, **overrides: Any) -> Any:
    """The config object a name (plus overrides) stands for, before any weights file is read:
    :class:`~.config.ModelConfig`, :class:`~.vivit.ViViTConfig` or
    :class:`~.video_lookwhere.VideoLookWhereConfig`."""
    spec = model_spec(name)
    values = spec.resolved(overrides)
    try:
        if spec.family == "image":
            from .config import model_config

            return model_config(values.pop("preset"), **values)
        if spec.family == "vivit":
            from .vivit import vivit_config

            return vivit_config(values.pop("preset"), **values)
        from .video_lookwhere import video_lookwhere_config

        values.pop("arch", None)
        return video_lookwhere_config(values.pop("preset"), **values)
    except ValueError as err:
        raise ConfigError(f"{name}: {err}") from None


def create_model(name: str, pretrained: str | None = None, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with ``overrides``, and load ``pretrained`` into it.

    Image models (LookWhere, full-res ViT, TokenLearner-ViT) are backbones returning a feature
    dict (no head; ``num_classes`` is not taken). ViViT returns logits (``num_classes``, default
    400 as Kinetics-400); video LookWhere is its backbone (a feature dict), or with
    ``num_classes`` its classifier network (:class:`~.video_lookwhere.VideoLookWhereNet`).
    """
    spec = model_spec(name)
    if spec.family == "image":
        from .checkpoint import load_pretrained, resolve_pretrained_config
        from .lookwhere import build_model

        if num_classes is not None:
            raise ConfigError(f"{name} is a backbone (a feature dict): it takes no num_classes; the head is the task's")
        # what the file decides (selector r, resize mode) is read before the model is built
        cfg = resolve_pretrained_config(model_config_of(name, **overrides, pretrained=pretrained))
        net = build_model(cfg)
        if cfg.pretrained:
            load_pretrained(net, cfg.pretrained, name=cfg.pretrained_name)
        return net
    if spec.family == "vivit":
        from .video_checkpoint import vivit_with_weights

        return vivit_with_weights(
            model_config_of(name, **overrides, pretrained=pretrained), 400 if num_classes is None else num_classes
        )
    from .video_lookwhere import VideoLookWhere, VideoLookWhereNet, load_video_lookwhere

    cfg = model_config_of(name, **overrides, pretrained=pretrained)
    if num_classes is not None:
        return VideoLookWhereNet(cfg, num_classes, freeze_selector=False)
    net = VideoLookWhere(cfg)
    if cfg.pretrained:
        load_video_lookwhere(net, cfg.pretrained)
    return net


def pretrained_cfg_of(name: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a registered name: input size, mean/std, interpolation."""
    spec = model_spec(name)
    cfg = model_config_of(name)
    video = (cfg.num_frames, cfg.img_size, cfg.img_size) if spec.family != "image" else ()
    input_size = (3, *video) if video else (3, *cfg.img_size)
    return {
        "architecture": name,
        "input_size": input_size,
        "fixed_input_size": False,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "num_classes": 400 if spec.family == "vivit" else 0,
        "description": spec.summary,
    }


def _timm_entrypoint(name: str) -> Any:
    """A timm-style builder for ``name``: ``pretrained`` True takes the file of
    ``pretrained_cfg_overlay={"file": ...}`` (there are no downloads), a string is the file."""

    def build(pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
        overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
        for key in ("pretrained_cfg", "cache_dir"):
            kwargs.pop(key, None)
        path = pretrained if isinstance(pretrained, str) else overlay.get("file") if pretrained else None
        if pretrained is True and path is None:
            raise ConfigError(f"{name}: no weights to download; pass pretrained_cfg_overlay={{'file': <local weights file>}}")
        model = create_model(name, pretrained=path, **kwargs)
        model.pretrained_cfg = pretrained_cfg_of(name)  # type: ignore[assignment]
        return model

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = model_spec(name).summary
    return build


__all__ = ["FAMILIES", "ModelSpec", "create_model", "list_models", "model_config_of", "model_spec", "pretrained_cfg_of"]

# timm's registry: each name's entrypoint is a function of this module (as in timm's own model
# modules; register_model adds the name to __all__)
for _name in _SPECS:
    globals()[_name] = register_model(_timm_entrypoint(_name))
