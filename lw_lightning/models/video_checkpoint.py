"""ViViT weights: this project's ``VideoClassifier`` checkpoints (the video distillation teacher;
TokenLearner inserted into a trained full ViViT, the comparison's TokenLearner baselines), HF ViViT
snapshots and image-ViT files (``model.pretrained``), each loaded after the model is built
(:func:`vivit_with_weights`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import ConfigError
from .hf_vivit import is_hf_vivit_source, load_hf_vivit
from .vivit import ViViT, ViViTConfig, load_image_vit, vivit_config

#: modules a ViViT may have that a checkpoint of the same ViViT without TokenLearner lacks
NEW_MODULES = ("encoder.token_learner", "encoder.fusers", "token_learner")


def read_video_classifier(path: str | Path, what: str) -> tuple[ViViTConfig, dict[str, Tensor]]:
    """ViViT config and ``net.*`` weights of a ViViT ``VideoClassifier`` checkpoint trained here."""
    from .checkpoint import read_weights

    ckpt = read_weights(path, what)
    hp = ckpt.get("hyper_parameters", {}).get("model") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or hp is None:
        raise ConfigError(
            f"{what} {path} is not a VideoClassifier checkpoint of this project (no state_dict / hyper_parameters.model)"
        )
    hp = dict(hp) if isinstance(hp, Mapping) else {}
    if hp.get("arch") == "lookwhere":
        raise ConfigError(f"{what} {path} is a video LookWhere classifier, not a ViViT")
    cfg = vivit_config(**{**hp, "pretrained": None})
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return cfg, state


def load_vivit_from_classifier(net: ViViT, path: str | Path) -> list[str]:
    """Load a ViViT VideoClassifier checkpoint into ``net`` wherever names and shapes agree;
    TokenLearner / fuser modules the checkpoint lacks keep their init. Returns those new keys."""
    _, state = read_video_classifier(path, "model.pretrained")
    own = net.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ConfigError(
                f"model.pretrained {path}: '{key}' has shape {list(value.shape)} there, {list(own[key].shape)} in the model"
            )
    new = sorted(k for k in own if k not in state)
    if any(not k.startswith(NEW_MODULES) for k in new):
        raise ConfigError(f"model.pretrained {path} does not fit the model: missing keys {new[:3]}")
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return new


def vivit_with_weights(cfg: ViViTConfig, num_classes: int) -> ViViT:
    """A :class:`ViViT` of ``cfg`` with ``cfg.pretrained`` loaded, if any: an HF ViViT snapshot
    (folder or ``hf:<repo id>``, :func:`~.hf_vivit.load_hf_vivit`) or an image ViT (a local file or
    a timm name, :func:`~.vivit.load_image_vit`)."""
    net = ViViT(cfg, num_classes)
    if cfg.pretrained:
        if is_hf_vivit_source(cfg.pretrained):
            load_hf_vivit(net, cfg.pretrained)
        else:
            load_image_vit(net, cfg.pretrained)
    return net


def build_vivit(model: ViViTConfig | Mapping[str, Any], num_classes: int) -> tuple[ViViTConfig, ViViT]:
    """``(config, ViViT)`` from ViViT fields; a ``pretrained`` ``.ckpt`` is a VideoClassifier
    checkpoint whose ViViT weights the new one starts from (:func:`load_vivit_from_classifier`);
    any other ``pretrained`` is the ViViT's own (image-ViT / HF weights, :func:`vivit_with_weights`)."""
    if not isinstance(model, Mapping):
        return model, vivit_with_weights(model, num_classes)
    ckpt = model.get("pretrained")
    if ckpt and str(ckpt).endswith(".ckpt"):
        cfg = vivit_config(**{**model, "pretrained": None})
        net = ViViT(cfg, num_classes)
        load_vivit_from_classifier(net, str(ckpt))
        return dataclasses.replace(cfg, pretrained=str(ckpt)), net
    cfg = vivit_config(**model)
    return cfg, vivit_with_weights(cfg, num_classes)
