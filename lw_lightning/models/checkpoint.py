"""LookWhere weights: the official release layout, and student initialisation from a teacher.

Official layout (``lookwhere_dinov2.pt``)::

    {"selector": {"backbone": <timm ViT state dict, depth-3 at 154 px>,
                  "head": {"w1.weight", "w1.bias", "w2.weight", "w2.bias"}},
     "extractor": <timm ViT state dict at 518 px>}

Loading is strict on key names; positional embeddings are bicubic-resampled when the stored
grid differs from the model's (e.g. a 518 px checkpoint into a 994 px extractor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from .lookwhere import LookWhere


def export_official(model: LookWhere) -> dict[str, dict]:
    """The model's weights in the official release layout (CPU tensors)."""

    def cpu(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    return {
        "selector": {"backbone": cpu(model.selector.backbone.state_dict()), "head": cpu(model.selector.head.state_dict())},
        "extractor": cpu(model.extractor.backbone.state_dict()),
    }


def save_official(model: LookWhere, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(export_official(model), path)
    return path


def _grid_of(n: int, target: tuple[int, int]) -> tuple[int, int]:
    if n == target[0] * target[1]:
        return target
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"cannot infer the grid of a stored pos_embed with {n} positions")
    return (side, side)


def adapt_vit_state(state: Mapping[str, Tensor], vit: VisionTransformer) -> dict[str, Tensor]:
    """Resample a stored patch ``pos_embed`` to ``vit``'s grid (prefix-free layout only)."""
    state = dict(state)
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        if not vit.no_embed_class:
            raise ValueError("pos_embed resampling here supports prefix-free (DINOv2-style) layouts only")
        target = tuple(vit.patch_embed.grid_size)
        pe = state["pos_embed"]
        old = _grid_of(pe.shape[1], target)  # type: ignore[arg-type]
        state["pos_embed"] = resample_abs_pos_embed(pe, new_size=list(target), old_size=list(old), num_prefix_tokens=0)
    return state


def _load_strict(module: torch.nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    own = set(module.state_dict())
    got = set(state)
    if own != got:
        missing, unexpected = sorted(own - got), sorted(got - own)
        raise ValueError(f"{what}: key mismatch; missing {missing[:6]}{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    module.load_state_dict(state, strict=True)


def load_official(model: LookWhere, weights: str | Path | Mapping) -> LookWhere:
    """Load official-layout weights into ``model`` (strict names, pos-embed resampling)."""
    if not isinstance(weights, Mapping):
        weights = torch.load(Path(weights), map_location="cpu", weights_only=True)
    if not {"selector", "extractor"} <= set(weights) or not {"backbone", "head"} <= set(weights["selector"]):
        raise ValueError("not a LookWhere checkpoint: expected keys selector.backbone, selector.head, extractor")
    sel = model.selector
    _load_strict(sel.backbone, adapt_vit_state(weights["selector"]["backbone"], sel.backbone), "selector.backbone")
    head = weights["selector"]["head"]
    if head["w2.weight"].shape != sel.head.w2.weight.shape:
        raise ValueError(
            f"selector head predicts {head['w2.weight'].shape[0]} sub-patch logits per token, the model "
            f"{sel.head.w2.weight.shape[0]}: set model.selector_r={math.isqrt(head['w2.weight'].shape[0])}"
        )
    _load_strict(sel.head, head, "selector.head")
    ext = model.extractor.backbone
    _load_strict(ext, adapt_vit_state(weights["extractor"], ext), "extractor")
    return model


def load_pretrained(model: LookWhere | torch.nn.Module, path: str | Path) -> None:
    """Load ``model.pretrained``: the official LookWhere layout (for LookWhere), or a timm ViT state
    dict (for the full-res ViT's backbone)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(model, LookWhere):
        load_official(model, weights)
        return
    backbone = model.backbone  # type: ignore[attr-defined]
    state = {k: v for k, v in weights.items() if not k.startswith("head.")}
    _load_strict(backbone, adapt_vit_state(state, backbone), "backbone")


def init_from_teacher(model: LookWhere, teacher: VisionTransformer) -> None:
    """Student initialisation (LookWhere pretraining): extractor = teacher copy; selector = the
    teacher's patch embedding, prefix tokens, first ``selector_depth`` blocks and final norm, with
    the pos-embed resampled to the low-res grid. The selector head keeps its random init."""
    t_state = {k: v for k, v in teacher.state_dict().items() if not k.startswith(("head.", "fc_norm."))}
    ext = model.extractor.backbone
    _load_strict(ext, adapt_vit_state({k: v for k, v in t_state.items() if k in ext.state_dict()}, ext), "extractor <- teacher")
    sel = model.selector.backbone
    depth = len(sel.blocks)
    sel_state = {}
    for k, v in t_state.items():
        if k.startswith("blocks."):
            if int(k.split(".")[1]) >= depth:
                continue
        sel_state[k] = v
    sel_state = {k: v for k, v in sel_state.items() if k in sel.state_dict()}
    _load_strict(sel, adapt_vit_state(sel_state, sel), "selector <- teacher")
