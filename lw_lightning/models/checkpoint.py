"""LookWhere weights: the official release layout, and student initialisation from a teacher.

Official layout (``lookwhere_dinov2.pt``)::

    {"selector": {"backbone": <timm ViT state dict, depth-3 at 154 px>,
                  "head": {"w1.weight", "w1.bias", "w2.weight", "w2.bias"}},
     "extractor": <timm ViT state dict at 518 px>,
     "resize_mode": "pretraining"}   # only in our exports: the mode the selector was trained in

Loading is strict on key names; positional embeddings are bicubic-resampled when the stored
grid differs from the model's (e.g. a 518 px checkpoint into a 994 px extractor), with the
resampling of the model's ``resize_mode``. :func:`resolve_pretrained_config` fills what the file
decides: ``selector_r`` from the head's shape, and ``resize_mode`` ("official" for the release,
which has no ``resize_mode`` entry).

ViT weights for the full-res ViT and the TokenLearner-ViT (``model.pretrained``) come from a timm
state dict, from an ``ImageClassifier`` ``.ckpt`` of a full-res ViT trained here, or from a file
that timm's checkpoint filter for ``model.pretrained_name`` converts (the teacher's loaders).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import pickle
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from ..errors import ConfigError
from .config import ModelConfig
from .lookwhere import FullResViT, LookWhere
from .tokenlearner_vit import TokenLearnerViT
from .vit import resample_grid

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
_LEGACY_MAGIC = b"\x80\x02"  # the older format starts with a protocol-2 pickle


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then the JSON header
    return len(head) >= 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < size


def check_weights_file(path: str | Path, what: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``path`` is a readable torch or safetensors
    file. Reads the header only (safetensors) or memory-maps the file (torch zip format)."""
    read_weights(path, what, header_only=True)


#: the config dataclasses that earlier versions pickled into a checkpoint's ``hyper_parameters``
#: when a module was built from Python with one (the CLI always passed plain dicts)
LEGACY_CONFIG_CLASSES = (
    "lw_lightning.models.config.ModelConfig",
    "lw_lightning.models.teacher.TeacherConfig",
    "lw_lightning.models.vivit.ViViTConfig",
    "lw_lightning.models.video_lookwhere.VideoLookWhereConfig",
    "lw_lightning.models.video_teacher.VideoTeacherConfig",
    "lw_lightning.models.video_teacher.FrameTeacherConfig",
    "lw_lightning.modules.distill.LossWeights",
)


class SavedConfig(dict):
    """What a legacy config dataclass (:data:`LEGACY_CONFIG_CLASSES`) loads as: its fields in a
    plain dict, which is what every module and loader takes. The real classes are never
    unpickled, so allowing these names runs no code of the file's choosing."""

    def __setstate__(self, state: dict[str, Any]) -> None:  # pickle's BUILD of the dataclass
        self.update(state)


def legacy_configs() -> contextlib.AbstractContextManager:
    """``torch.load(weights_only=True)`` inside this context also reads :data:`LEGACY_CONFIG_CLASSES`
    (as :class:`SavedConfig`), so checkpoints of earlier versions still load."""
    return torch.serialization.safe_globals([(SavedConfig, name) for name in LEGACY_CONFIG_CLASSES])


def refused_object(err: BaseException) -> str | None:
    """What torch's weights-only unpickler refused to build (a global's name such as
    ``posix.system``, or its own words for an opcode), or None when ``err`` is no such refusal."""
    if not isinstance(err, pickle.UnpicklingError):
        return None
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return found.group(1)
    found = re.search(r"^(Unsupported operand \d+|Can only [^\n]*|Only persistent_load [^\n]*)$", text, re.M)
    return found.group(1).rstrip(".") if found else None


def unsafe_file_error(what: str, path: str | Path, refused: str) -> ConfigError:
    """The one-line error for a file refused for its pickled objects (not "truncated or corrupt")."""
    return ConfigError(
        f"{what} {path} holds objects that could run code when loaded ({refused}); only weights and plain values are read"
    )


def read_weights(path: str | Path, what: str, header_only: bool = False) -> Any:
    """``torch.load`` (or safetensors ``load_file``) a local weights file on the CPU.

    Always ``weights_only=True``: tensors, plain containers and values, and the legacy config
    dataclasses (:func:`legacy_configs`, read as dicts); a file whose pickle would build any other
    object is refused unread (:func:`unsafe_file_error`). Other unreadable files are a one-line
    :class:`ConfigError` naming ``what`` and the file: an empty or cut-off file is "truncated or
    corrupt", any other content "not a checkpoint". torch's zip format is memory-mapped, so reading
    a large checkpoint only to check it costs little.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        raise ConfigError(f"{what} {path} is truncated or corrupt: the file is empty")
    if path.suffix == ".safetensors" or _is_safetensors(head, size):
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            if header_only:
                with safe_open(str(path), "pt") as handle:
                    handle.keys()
                return None
            return load_file(str(path))
        except Exception as err:
            raise ConfigError(f"{what} {path} is truncated or corrupt (safetensors: {_first_line(err)})") from None
    zipped = head.startswith(_ZIP_MAGIC)
    if not zipped and not head.startswith(_LEGACY_MAGIC):
        raise ConfigError(f"{what} {path} is not a checkpoint (neither a torch.save nor a safetensors file)")
    try:
        with legacy_configs():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as err:  # cut-off zip (no central directory), short reads, bad records
        refused = refused_object(err)
        if refused is not None:
            raise unsafe_file_error(what, path, refused) from None
        raise ConfigError(f"{what} {path} is truncated or corrupt ({type(err).__name__}: {_first_line(err)[:160]})") from None


def check_state_dict(expected: Mapping[str, Tensor], got: Mapping[str, Any], what: str, target: str = "the model") -> None:
    """One-line :class:`ConfigError` unless ``got`` has exactly ``expected``'s keys and shapes.

    A key both have with another shape is reported first (another architecture: the key and both
    shapes); then missing and unexpected keys, each with their number and the first three."""
    for key, value in expected.items():
        if key in got:
            shape = tuple(getattr(got[key], "shape", ()))
            if tuple(value.shape) != shape:
                raise ConfigError(
                    f"{what} does not fit {target}: '{key}' has shape {list(shape)} in the checkpoint, {list(value.shape)} in the model"
                )
    own, theirs = set(expected), set(got)
    if own != theirs:
        missing, unexpected = sorted(own - theirs), sorted(theirs - own)

        def listed(keys: list[str], kind: str) -> str:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            return f"{len(keys)} {kind} key{'s' if len(keys) != 1 else ''} {keys[:3]}{more}"

        parts = [listed(keys, kind) for keys, kind in ((missing, "missing"), (unexpected, "unexpected")) if keys]
        raise ConfigError(f"{what} does not fit {target} (key mismatch): {', '.join(parts)}")


def export_official(model: LookWhere) -> dict[str, Any]:
    """The model's weights in the official release layout (CPU tensors), plus the
    ``resize_mode`` its selector ran with (the released code reads only the two weight keys)."""

    def cpu(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    return {
        "selector": {"backbone": cpu(model.selector.backbone.state_dict()), "head": cpu(model.selector.head.state_dict())},
        "extractor": cpu(model.extractor.backbone.state_dict()),
        "resize_mode": model.cfg.resize,
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


def _stored_prefix(state: Mapping[str, Tensor]) -> int:
    cls = 1 if "cls_token" in state else 0
    reg = state["reg_token"].shape[1] if "reg_token" in state else 0
    return cls + reg


def adapt_vit_state(state: Mapping[str, Tensor], vit: VisionTransformer, antialias: bool = True) -> dict[str, Tensor]:
    """Resample a stored patch ``pos_embed`` to ``vit``'s grid (prefix-free layout only), with
    timm's antialiased bicubic or (``antialias=False``) the released code's plain bicubic.

    A ``pos_embed`` that also covers the prefix tokens (timm's original-ViT layout, e.g. AugReg
    ViT-B/16: 1 + 196 positions) is folded into them: the prefix tokens are constants, so
    ``cls_token + pos[0]`` is exactly what entered the first block, and the rest is the patch grid.
    """
    state = dict(state)
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        if not vit.no_embed_class:
            raise ValueError("pos_embed resampling here supports prefix-free (DINOv2-style) layouts only")
        target = tuple(vit.patch_embed.grid_size)
        pe = state["pos_embed"]
        n, prefix = pe.shape[1], _stored_prefix(state)
        if n != target[0] * target[1] and math.isqrt(n) ** 2 != n and prefix and math.isqrt(n - prefix) ** 2 == n - prefix:
            if "cls_token" in state:
                state["cls_token"] = state["cls_token"] + pe[:, :1]
            if "reg_token" in state:
                state["reg_token"] = state["reg_token"] + pe[:, 1:prefix]
            pe = pe[:, prefix:]
        old = _grid_of(pe.shape[1], target)  # type: ignore[arg-type]
        state["pos_embed"] = resample_grid(pe, target, old, antialias=antialias)  # type: ignore[arg-type]
    return state


def _load_strict(module: torch.nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    # names and shapes first: load_state_dict reports every mismatch in a many-line RuntimeError
    check_state_dict(module.state_dict(), state, what)
    module.load_state_dict(state, strict=True)


def _official_parts(weights: Any) -> tuple[Mapping, Mapping, Mapping]:
    """(selector backbone, selector head, extractor) of official-layout ``weights``."""
    ok = isinstance(weights, Mapping) and {"selector", "extractor"} <= set(weights)
    if not ok or not isinstance(weights["selector"], Mapping) or not {"backbone", "head"} <= set(weights["selector"]):
        raise ValueError("not a LookWhere checkpoint: expected keys selector.backbone, selector.head, extractor")
    return weights["selector"]["backbone"], weights["selector"]["head"], weights["extractor"]


def recorded_resize_mode(weights: Mapping) -> str:
    """The ``resize_mode`` official-layout ``weights`` were made with: our exports record it, the
    release (which does not) is the released inference code's, "official"."""
    mode = weights.get("resize_mode", "official")
    if mode not in ("official", "pretraining"):
        raise ValueError(f"the checkpoint records resize_mode={mode!r}; expected 'official' or 'pretraining'")
    return str(mode)


def head_selector_r(head: Mapping[str, Tensor]) -> int:
    """The sub-patch block side r of a stored selector head (its ``w2`` predicts r² logits)."""
    w2 = head.get("w2.weight")
    n = int(w2.shape[0]) if w2 is not None and getattr(w2, "ndim", 0) == 2 else 0
    r = math.isqrt(n)
    if n == 0 or r * r != n:
        raise ValueError(f"selector head w2.weight of shape {list(getattr(w2, 'shape', []))}: expected r*r outputs per token")
    return r


def resolve_pretrained_config(cfg: ModelConfig) -> ModelConfig:
    """Fill the LookWhere settings that ``cfg.pretrained`` (official layout) decides and the
    config leaves None: ``selector_r`` from the stored head's shape (the release: r = 4) and
    ``resize_mode`` (the release: "official"; our exports: the mode they record). Any other config,
    or one that sets both, is returned as it is. A bad file is a one-line :class:`ConfigError`."""
    if cfg.arch != "lookwhere" or not cfg.pretrained or (cfg.selector_r is not None and cfg.resize_mode is not None):
        return cfg
    weights = read_weights(cfg.pretrained, "model.pretrained")  # memory-mapped: only the head is read
    try:
        _, head, _ = _official_parts(weights)
        r = cfg.selector_r if cfg.selector_r is not None else head_selector_r(head)
        mode = cfg.resize_mode or recorded_resize_mode(weights)
    except ValueError as err:
        raise ConfigError(f"model.pretrained {cfg.pretrained}: {err}") from None
    return dataclasses.replace(cfg, selector_r=r, resize_mode=mode)


def resolved_model_config(cfg: ModelConfig, hparams: Any) -> ModelConfig:
    """:func:`resolve_pretrained_config` for a LightningModule: what the file decided is also
    written into ``hparams["model"]``, so the module's checkpoints rebuild the same model
    without the pretrained file (evaluation skips ``model.pretrained``)."""
    resolved = resolve_pretrained_config(cfg)
    if resolved is not cfg and "model" in hparams:
        decided = {"selector_r": resolved.selector_r, "resize_mode": resolved.resize_mode}
        model = hparams["model"]
        hparams["model"] = {**model, **decided} if isinstance(model, Mapping) else dataclasses.replace(model, **decided)
    return resolved


def load_official(model: LookWhere, weights: str | Path | Mapping) -> LookWhere:
    """Load official-layout weights into ``model`` (strict names, pos-embed resampling).

    A model built with ``resize_mode`` None takes the file's mode (the release: "official"), as
    long as that does not change the selector's input size it was built for (non-square inputs:
    build with :func:`resolve_pretrained_config`, or set ``resize_mode``)."""
    if not isinstance(weights, Mapping):
        weights = read_weights(weights, "LookWhere weights")
    sel_state, head, ext_state = _official_parts(weights)
    cfg = model.cfg
    if cfg.resize_mode is None:
        mode = recorded_resize_mode(weights)
        hw = tuple(cfg.img_size)
        if dataclasses.replace(cfg, resize_mode=mode).selector_size_for(hw) != cfg.selector_size_for(hw):  # type: ignore[arg-type]
            raise ValueError(
                f"the checkpoint is for model.resize_mode={mode}, which sizes the selector input differently: set model.resize_mode"
            )
        cfg.resize_mode = mode
    sel = model.selector
    _load_strict(sel.backbone, adapt_vit_state(sel_state, sel.backbone, antialias=cfg.antialias), "selector.backbone")
    r = head_selector_r(head)
    if r != sel.head.r:
        raise ValueError(
            f"selector head predicts {r * r} sub-patch logits per token, the model {sel.head.r**2}: set model.selector_r={r} (or leave it unset)"
        )
    _load_strict(sel.head, head, "selector.head")
    ext = model.extractor.backbone
    _load_strict(ext, adapt_vit_state(ext_state, ext, antialias=cfg.antialias), "extractor")
    return model


def load_pretrained(model: torch.nn.Module, path: str | Path, name: str | None = None) -> None:
    """Load ``model.pretrained``: the official LookWhere layout (for LookWhere), or ViT weights
    into the backbone of the full-res ViT / TokenLearner-ViT: a timm state dict, an
    ``ImageClassifier`` ``.ckpt`` of a full-res ViT, or (``name``: ``model.pretrained_name``) any
    file timm's checkpoint filter for that model reads. TokenLearner modules keep their init."""
    if isinstance(model, LookWhere):
        if name:
            raise ConfigError(
                f"model.pretrained_name={name!r} is for arch vit / tokenlearner; LookWhere loads the official layout"
            )
        weights = read_weights(path, "model.pretrained")
        if not isinstance(weights, Mapping):
            raise ConfigError(
                f"model.pretrained {path} is not a checkpoint: it holds a {type(weights).__name__}, not a dict of weights"
            )
        try:
            load_official(model, weights)
        except ValueError as err:  # name the file: "extractor does not fit" alone does not say which
            raise ConfigError(f"model.pretrained {path}: {err}") from None
        return
    if name:
        weights = create_timm_vit(name, path, "model.pretrained").state_dict()
    elif Path(path).suffix == ".ckpt":
        weights = vit_from_lightning_checkpoint(Path(path).expanduser(), "model.pretrained").state_dict()
    else:
        weights = read_weights(path, "model.pretrained")
    if not isinstance(weights, Mapping):
        raise ConfigError(
            f"model.pretrained {path} is not a checkpoint: it holds a {type(weights).__name__}, not a dict of weights"
        )
    state = {k: v for k, v in weights.items() if not k.startswith(("head.", "fc_norm."))}
    backbone = model.backbone  # type: ignore[attr-defined]
    try:
        state = adapt_vit_state(state, backbone)
        if isinstance(model, TokenLearnerViT):
            check_state_dict(model.vit_state_dict(), state, "backbone")
            model.load_vit_state_dict(state)
        else:
            _load_strict(backbone, state, "backbone")
    except ValueError as err:  # name the file: "backbone does not fit" alone does not say which
        raise ConfigError(f"model.pretrained {path}: {err}") from None


def create_timm_vit(
    name: str, path: str | Path | None, what: str, pretrained: bool = False, img_size: list[int] | None = None
) -> VisionTransformer:
    """timm ViT ``name`` (no head) with the weights of the local file ``path`` (see
    :func:`load_timm_file`: HF/timm safetensors, an original DINOv2 ``.pth``, an AugReg ``.npz``),
    or downloaded when ``pretrained`` and online. A file that does not fit is one line naming ``what``."""
    import timm

    kwargs: dict = {"num_classes": 0}
    if img_size:
        kwargs["img_size"] = tuple(img_size)
    vit = timm.create_model(name, pretrained=pretrained and path is None, **kwargs)
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"{what}: {name} is not a timm VisionTransformer")
    if path is not None:
        load_timm_file(vit, path, what, name)
    return vit


def load_timm_file(vit: VisionTransformer, path: str | Path, what: str, name: str) -> None:
    """Load a local weights file into the timm ViT ``vit`` (model ``name``) the way timm's
    ``pretrained_cfg_overlay={"file": ...}`` does, but strictly and with one-line errors.

    timm's own pieces do the conversion: its file reader (safetensors or torch; EMA /
    ``state_dict`` / ``model`` wrappers, DDP prefixes) and the model family's
    ``checkpoint_filter_fn`` (original DINOv2 names -> timm's, pos-embed resampled to the model's
    grid). The classifier is dropped (the model has none). timm itself loads non-strictly whenever
    the model's ``num_classes`` differs from the weights' (a file with missing keys would then load
    half-random), so names and shapes are checked here: another architecture names the first key
    whose shape differs, missing keys are counted. ``.npz`` (big_vision) goes to timm's own reader.
    """
    from timm.models import load_state_dict as timm_read_file

    path = Path(path).expanduser()
    where = f"{what} {path}"
    if path.suffix == ".npz":
        if not path.is_file():
            raise ConfigError(f"{what} not found: {path}")
        try:
            vit.load_pretrained(str(path))
        except Exception as err:  # timm's npz reader: KeyError on a missing array, ValueError on a bad file
            raise ConfigError(
                f"{where} cannot be read as {name} weights ({type(err).__name__}: {_first_line(err)[:200]})"
            ) from None
        return
    check_weights_file(path, what)  # truncated / not a checkpoint: one line (timm's reader would give a traceback)
    try:
        state = timm_read_file(str(path), weights_only=True)
    except Exception as err:
        raise ConfigError(f"{where} is truncated or corrupt ({type(err).__name__}: {_first_line(err)[:200]})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{where} is not a state dict of tensors (one name -> tensor per weight)")
    filter_fn = getattr(importlib.import_module(type(vit).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(dict(state), vit)
        except Exception as err:  # a layout the filter does not know (e.g. pos_embed missing)
            raise ConfigError(
                f"{where}: timm's checkpoint filter for {name} cannot convert it ({type(err).__name__}: {_first_line(err)[:200]})"
            ) from None
    own = vit.state_dict()
    classifier = (getattr(vit, "pretrained_cfg", None) or {}).get("classifier") or "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if k in own or k.rsplit(".", 1)[0] not in heads}
    check_state_dict(own, state, where, target=name)
    vit.load_state_dict(state, strict=True)


def vit_from_lightning_checkpoint(path: Path, what: str) -> VisionTransformer:
    """The timm backbone of a full-res ViT ``ImageClassifier`` checkpoint trained here."""

    from .config import model_config

    ckpt = read_weights(path, what)
    model_hp = ckpt.get("hyper_parameters", {}).get("model") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or model_hp is None:
        raise ConfigError(
            f"{what} {path} is not an ImageClassifier checkpoint of this project (no state_dict / hyper_parameters.model)"
        )
    model_hp = dict(model_hp) if isinstance(model_hp, Mapping) else {}
    if model_hp.get("arch") != "vit":
        raise ValueError(f"{what} {path} is not a full-resolution ViT (model.arch={model_hp.get('arch')})")
    model_hp.pop("pretrained", None)
    model_hp.pop("pretrained_name", None)
    net = FullResViT(model_config(**model_hp))
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    check_state_dict(net.state_dict(), state, f"{what} {path}")
    net.load_state_dict(state, strict=True)
    return net.backbone


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
        if k.startswith("blocks.") and int(k.split(".")[1]) >= depth:
            continue
        sel_state[k] = v
    sel_state = {k: v for k, v in sel_state.items() if k in sel.state_dict()}
    _load_strict(sel, adapt_vit_state(sel_state, sel), "selector <- teacher")
