"""Hugging Face ``transformers`` ViViT weights in and out of :class:`~.vivit.ViViT` (Model 1).

A snapshot folder holds ``config.json`` (``model_type: vivit``) and ``model.safetensors`` as
``save_pretrained`` writes them, for ``VivitForVideoClassification`` (keys under ``vivit.`` plus
``classifier.*``) or ``VivitModel`` (no prefix, a ``pooler`` we do not use). The tensors map
one to one onto ours:

=====================================================  ===========================================
HF (``save_pretrained`` layout)                        ours
=====================================================  ===========================================
``embeddings.cls_token`` / ``position_embeddings``     ``cls_token`` / ``pos_embed`` (1 + N positions)
``embeddings.patch_embeddings.projection``             ``patch_embed.proj`` (Conv3d, same layout)
``encoder.layer.i.layernorm_before`` / ``_after``      ``encoder.blocks.i.norm1`` / ``norm2``
``encoder.layer.i.attention.attention.{query,key,value}``  ``encoder.blocks.i.attn.qkv`` (rows q, k, v)
``encoder.layer.i.attention.output.dense``             ``encoder.blocks.i.attn.proj``
``encoder.layer.i.intermediate.dense`` / ``output.dense``  ``encoder.blocks.i.mlp.fc1`` / ``fc2``
``layernorm`` / ``classifier``                         ``norm`` / ``head``
=====================================================  ===========================================

transformers 5 renames the modules in memory (``layers.i.attention.q_proj``, ``mlp.fc1``, ...) but
still writes the layout above; both spellings are read. HF's ``gelu_fast`` is tanh GELU and its
LayerNorm eps is 1e-6, as ours. A model with TokenLearner (``num_tokens > 0``) takes every ViViT
tensor and keeps its TokenLearner init; a ``classifier="gap"`` model leaves the CLS token (and its
position) out. Pass ``hf:<repo id>`` (or ``<org>/<name>``) to download a snapshot when online.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .vivit import ViViT, ViViTConfig, vivit_config

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
#: HF ``hidden_act`` -> our ``activation`` (``gelu_fast`` / ``gelu_new`` / ``gelu_pytorch_tanh`` are tanh GELU).
HF_ACTIVATIONS = {"gelu_fast": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: transformers 5's in-memory names -> the names save_pretrained writes (and transformers 4 uses)
_V5_NAMES = (
    (re.compile(r"^layers\.(\d+)\.attention\.([qkv])_proj\."), None),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"encoder.layer.\1.attention.output.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc1\."), r"encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc2\."), r"encoder.layer.\1.output.dense."),
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
)
_QKV = {"q": "query", "k": "key", "v": "value"}


def is_hf_vivit_source(source: str) -> bool:
    """True for a folder with a ``config.json``, ``hf:<repo id>``, or an ``<org>/<name>`` that is
    not a local path and has no file suffix (an HF repo id)."""
    if source.startswith("hf:"):
        return True
    path = Path(source).expanduser()
    if path.is_dir():
        return True  # image-ViT weights are files; a folder must be a snapshot (checked on reading)
    return (
        not path.exists()
        and bool(_REPO_ID.match(source))
        and path.suffix not in (".pth", ".pt", ".bin", ".safetensors", ".npz", ".ckpt")
    )


def snapshot_folder(source: str) -> Path:
    """The local snapshot folder of ``source``: the folder itself, or a download (``hf:<repo id>``)
    of its config and safetensors weights through ``huggingface_hub`` (needs the network or its cache)."""
    path = Path(source.removeprefix("hf:")).expanduser()
    if not source.startswith("hf:") and path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(
                f"model.pretrained {path} is a folder without {CONFIG_FILE} (expected an HF ViViT snapshot: config.json + model.safetensors)"
            )
        return path
    repo_id = source.removeprefix("hf:")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, "*.safetensors", "preprocessor_config.json"]))
    except Exception as err:  # offline, unknown repo, gated: one line, never a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.pretrained {source}: no local folder of that name and the download from the HF Hub failed "
            f"({type(err).__name__}: {first[:200]}); give a local snapshot folder (config.json + model.safetensors)"
        ) from None


def read_hf_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of an HF ViViT snapshot (one-line errors for a bad or foreign file)."""
    path = folder / CONFIG_FILE
    try:
        hf = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.pretrained {path} is not a readable JSON config ({type(err).__name__}: {err})") from None
    if not isinstance(hf, dict) or hf.get("model_type") != "vivit":
        kind = hf.get("model_type") if isinstance(hf, dict) else type(hf).__name__
        raise ConfigError(f"model.pretrained {path} describes a {kind!r} model, not an HF ViViT (model_type 'vivit')")
    return hf


def config_overrides(hf: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`ViViTConfig` fields that reproduce an HF ``VivitConfig`` (Model 1, CLS classifier)."""
    size = hf.get("image_size", 224)
    if not isinstance(size, int):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"HF ViViT image_size {size}: only square inputs are supported here")
        size = int(size[0])
    act = hf.get("hidden_act", "gelu_fast")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"HF ViViT hidden_act {act!r} has no counterpart here (supported: {sorted(HF_ACTIVATIONS)})")
    width = int(hf.get("hidden_size", 768))
    if float(hf.get("layer_norm_eps", 1e-6)) != 1e-6:
        log.warning("HF ViViT layer_norm_eps=%s; ours is 1e-6 (outputs will differ slightly)", hf.get("layer_norm_eps"))
    return dict(
        variant="joint",
        classifier="token",
        img_size=size,
        num_frames=int(hf.get("num_frames", 32)),
        tubelet=[int(v) for v in hf.get("tubelet_size", [2, 16, 16])],
        embed_dim=width,
        depth=int(hf.get("num_hidden_layers", 12)),
        num_heads=int(hf.get("num_attention_heads", 12)),
        mlp_ratio=int(hf.get("intermediate_size", 4 * width)) / width,
        activation=HF_ACTIVATIONS[act],
        dropout=float(hf.get("hidden_dropout_prob", 0.0)),
    )


def num_labels(hf: Mapping[str, Any]) -> int | None:
    """Classes of an HF ``VivitForVideoClassification`` config (None when it names none)."""
    if "id2label" in hf:
        return len(hf["id2label"])
    return int(hf["num_labels"]) if "num_labels" in hf else None


def _canonical(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys in the save_pretrained layout without the ``vivit.`` prefix (``classifier.*`` kept)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("vivit.")
        for pattern, repl in _V5_NAMES:
            m = pattern.match(key)
            if m:
                if repl is None:
                    key = f"encoder.layer.{m.group(1)}.attention.attention.{_QKV[m.group(2)]}." + key[m.end() :]
                else:
                    key = pattern.sub(repl, key, count=1)
                break
        out[key] = value
    return out


def _block_pairs(i: int) -> list[tuple[str, str]]:
    """(HF key, our key) of block i, qkv aside."""
    hf, ours = f"encoder.layer.{i}.", f"encoder.blocks.{i}."
    pairs = [
        ("layernorm_before", "norm1"),
        ("layernorm_after", "norm2"),
        ("attention.output.dense", "attn.proj"),
        ("intermediate.dense", "mlp.fc1"),
        ("output.dense", "mlp.fc2"),
    ]
    return [(f"{hf}{a}.{p}", f"{ours}{b}.{p}") for a, b in pairs for p in ("weight", "bias")]


def vivit_to_hf_state(model: ViViT) -> dict[str, Tensor]:
    """The HF tensors (canonical names, no ``vivit.`` prefix) of ``model``'s ViViT part, in
    checkpoint order: embeddings, blocks 0…L-1, final norm, then ``classifier.*``."""
    cfg = model.cfg
    if cfg.variant != "joint":
        raise ConfigError(f"HF ViViT is Model 1 (model.variant=joint); this model is variant={cfg.variant!r}")
    own = model.state_dict()
    out: dict[str, Tensor] = {}
    if cfg.num_prefix:
        out["embeddings.cls_token"] = own["cls_token"]
    out["embeddings.position_embeddings"] = own["pos_embed"]
    out["embeddings.patch_embeddings.projection.weight"] = own["patch_embed.proj.weight"]
    out["embeddings.patch_embeddings.projection.bias"] = own["patch_embed.proj.bias"]
    for i in range(cfg.depth):
        for name, part in zip(("query", "key", "value"), own[f"encoder.blocks.{i}.attn.qkv.weight"].chunk(3)):
            out[f"encoder.layer.{i}.attention.attention.{name}.weight"] = part
        for name, part in zip(("query", "key", "value"), own[f"encoder.blocks.{i}.attn.qkv.bias"].chunk(3)):
            out[f"encoder.layer.{i}.attention.attention.{name}.bias"] = part
        for hf, ours in _block_pairs(i):
            out[hf] = own[ours]
    out["layernorm.weight"], out["layernorm.bias"] = own["norm.weight"], own["norm.bias"]
    out["classifier.weight"], out["classifier.bias"] = own["head.weight"], own["head.bias"]
    return out


def _more(keys: list[str]) -> str:
    return f"{keys[:3]}{f' (+{len(keys) - 3} more)' if len(keys) > 3 else ''}"


def load_hf_vivit(model: ViViT, source: str | Path | Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Copy HF ViViT weights (a snapshot folder, ``hf:<repo id>``, or a state dict) into ``model``.

    Every ViViT tensor of ``model`` must be in the file with the same shape, else one
    :class:`ConfigError` line: the first key whose shape differs (both shapes), or how many
    tensors are missing and the first few. The head is loaded when its class count matches (else
    it keeps its zero init, logged); TokenLearner modules keep their init. Returns loaded /
    unused keys (HF names).
    """
    what = "model.pretrained" if not isinstance(source, Mapping) else "HF ViViT weights"
    expected = vivit_to_hf_state(model)  # first: a Model 2 fails before any file is read
    if isinstance(source, Mapping):
        state, where = dict(source), "the state dict"
    else:
        folder = snapshot_folder(str(source))
        read_hf_config(folder)
        state, where = read_hf_weights(folder), str(folder)
    theirs = _canonical(state)
    if model.cfg.num_prefix == 0 and "embeddings.position_embeddings" in theirs:
        pos = theirs["embeddings.position_embeddings"]
        if pos.ndim == 3 and pos.shape[1] == expected["embeddings.position_embeddings"].shape[1] + 1:
            theirs["embeddings.position_embeddings"] = pos[:, 1:]  # a gap model has no CLS position
    # the ViViT's q / k / v come as three tensors each
    head = {k: expected.pop(k) for k in ("classifier.weight", "classifier.bias")}
    missing = [k for k in expected if k not in theirs]
    if missing:
        raise ConfigError(f"{what} {where} lacks {len(missing)} of the model's {len(expected)} ViViT tensors: {_more(missing)}")
    for key, value in expected.items():
        shape = tuple(getattr(theirs[key], "shape", ()))
        if shape != tuple(value.shape):
            raise ConfigError(
                f"{what} {where} does not fit the model: '{key}' has shape {list(shape)} in the checkpoint, {list(value.shape)} in the model"
            )
    spare = sorted(
        k for k in theirs if k not in expected and not k.startswith(("classifier.", "pooler.")) and k != "embeddings.cls_token"
    )
    if spare:
        depth = len({k.split(".")[2] for k in theirs if k.startswith("encoder.layer.")})
        raise ConfigError(
            f"{what} {where} does not fit the model: {len(spare)} checkpoint tensors have no place in it, {_more(spare)} "
            f"(the checkpoint has {depth} blocks, the model {model.cfg.depth})"
        )
    loaded = list(expected)
    if all(k in theirs for k in head) and all(tuple(theirs[k].shape) == tuple(v.shape) for k, v in head.items()):
        expected.update(head)
        loaded += list(head)
    elif "classifier.weight" in theirs:
        log.info(
            "HF ViViT: head not loaded (%d classes in the checkpoint, %d in the model)",
            theirs["classifier.weight"].shape[0],
            head["classifier.weight"].shape[0],
        )
    _copy_into(model, theirs, loaded)
    unused = sorted(k for k in theirs if k not in loaded)
    log.info("HF ViViT: loaded %d tensors from %s; unused: %s", len(loaded), where, unused)
    return {"loaded": loaded, "skipped": unused}


def _copy_into(model: ViViT, theirs: Mapping[str, Tensor], keys: list[str]) -> None:
    own = model.state_dict()
    with torch.no_grad():
        if "embeddings.cls_token" in keys:
            own["cls_token"].copy_(theirs["embeddings.cls_token"])
        own["pos_embed"].copy_(theirs["embeddings.position_embeddings"])
        own["patch_embed.proj.weight"].copy_(theirs["embeddings.patch_embeddings.projection.weight"])
        own["patch_embed.proj.bias"].copy_(theirs["embeddings.patch_embeddings.projection.bias"])
        for i in range(model.cfg.depth):
            for p in ("weight", "bias"):
                parts = [theirs[f"encoder.layer.{i}.attention.attention.{n}.{p}"] for n in ("query", "key", "value")]
                own[f"encoder.blocks.{i}.attn.qkv.{p}"].copy_(torch.cat(parts))
            for hf, ours in _block_pairs(i):
                own[ours].copy_(theirs[hf])
        own["norm.weight"].copy_(theirs["layernorm.weight"])
        own["norm.bias"].copy_(theirs["layernorm.bias"])
        if "classifier.weight" in keys:
            own["head.weight"].copy_(theirs["classifier.weight"])
            own["head.bias"].copy_(theirs["classifier.bias"])


def read_hf_weights(folder: Path) -> dict[str, Tensor]:
    """The tensors of a snapshot folder (``model.safetensors``, else ``pytorch_model.bin``);
    truncated or foreign files are one line (:func:`~.checkpoint.read_weights`)."""
    from .checkpoint import read_weights

    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            state = read_weights(folder / name, "model.pretrained")
            if not isinstance(state, Mapping):
                raise ConfigError(f"model.pretrained {folder / name} holds a {type(state).__name__}, not a dict of tensors")
            return dict(state)
    if (folder / "model.safetensors.index.json").is_file():
        raise ConfigError(f"model.pretrained {folder}: sharded safetensors are not supported; save with a larger max_shard_size")
    raise ConfigError(f"model.pretrained {folder} has none of {list(WEIGHTS_FILES)}")


def vivit_from_hf(source: str | Path, num_classes: int | None = None, **overrides: Any) -> ViViT:
    """A :class:`ViViT` shaped by the snapshot's ``config.json`` with its weights. ``num_classes``
    defaults to the checkpoint's; ``overrides`` (e.g. ``num_tokens=8, tokenlearner_loc=6``) are
    :class:`ViViTConfig` fields on top."""
    folder = snapshot_folder(str(source))
    hf = read_hf_config(folder)
    cfg = vivit_config("base", **{**config_overrides(hf), **overrides})
    classes = num_classes if num_classes is not None else num_labels(hf)
    if classes is None:
        raise ConfigError(f"{folder / CONFIG_FILE} names no classes (a VivitModel): pass num_classes")
    model = ViViT(cfg, classes)
    load_hf_vivit(model, str(folder))
    return model


def hf_config(model: ViViT) -> dict[str, Any]:
    """An HF ``VivitConfig`` dict (``VivitForVideoClassification``) describing ``model``."""
    c: ViViTConfig = model.cfg
    if c.classifier != "token" or c.variant != "joint" or c.num_tokens:
        raise ConfigError("only a plain ViViT Model 1 with classifier=token (no TokenLearner) exists in transformers")
    classes = model.head.out_features
    return {
        "architectures": ["VivitForVideoClassification"],
        "model_type": "vivit",
        "image_size": c.img_size,
        "num_frames": c.num_frames,
        "tubelet_size": list(c.tubelet),
        "num_channels": 3,
        "hidden_size": c.embed_dim,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads,
        "intermediate_size": int(c.embed_dim * c.mlp_ratio),
        "hidden_act": "gelu_fast" if c.activation == "gelu_tanh" else "gelu",
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "id2label": {str(i): f"LABEL_{i}" for i in range(classes)},
        "label2id": {f"LABEL_{i}": i for i in range(classes)},
    }


def save_hf_vivit(model: ViViT, folder: str | Path) -> Path:
    """Write ``model`` as an HF snapshot (``config.json`` + ``model.safetensors``, the layout
    ``VivitForVideoClassification.save_pretrained`` writes) that ``from_pretrained`` loads."""
    from safetensors.torch import save_file

    folder = Path(folder)
    config = hf_config(model)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in vivit_to_hf_state(model).items():
        name = key if key.startswith("classifier.") else f"vivit.{key}"
        tensors[name] = value.detach().cpu().contiguous().clone()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


# ------------------------------------------------------------------------------------------------
# preprocessing: VivitImageProcessor's settings as our Kinetics data options
# ------------------------------------------------------------------------------------------------


def processor_data_overrides(processor: Mapping[str, Any]) -> dict[str, Any]:
    """``data.*`` values of :class:`~lw_lightning.data.kinetics.KineticsDataModule` that give
    ``VivitImageProcessor``'s pixels (keys and defaults of its ``preprocessor_config.json``).

    The processor computes ``((x · r − offset) − m) / s`` on 0…255 pixels (``offset`` 1 when set,
    ``m, s`` only with ``do_normalize``); ours is ``(x / 255 − M) / S``, so ``S = s / (255 r)`` and
    ``M = (offset + m) / (255 r)``. Its defaults (``1/127.5``, offset, normalise with 0.5 / 0.5)
    give M = 0.75, S = 0.25: pixels in [−3, 1]. Without ``do_normalize``: M = S = 0.5, [−1, 1].
    """
    r = float(processor.get("rescale_factor", 1 / 127.5)) if processor.get("do_rescale", True) else 1.0
    offset = 1.0 if processor.get("offset", True) else 0.0
    norm = processor.get("do_normalize", True)
    mean = processor.get("image_mean", [0.5] * 3) if norm else [0.0] * 3
    std = processor.get("image_std", [0.5] * 3) if norm else [1.0] * 3
    mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
    std = [std] * 3 if isinstance(std, (int, float)) else list(std)
    size = processor.get("size", {"shortest_edge": 256})
    crop = processor.get("crop_size", {"height": 224, "width": 224})
    if "shortest_edge" not in size or crop.get("height") != crop.get("width"):
        raise ConfigError(
            f"processor size {size} / crop_size {crop}: only a shortest-edge resize and a square crop are supported"
        )
    return {
        "eval_short_side": int(size["shortest_edge"]),
        "img_size": int(crop["height"]),
        "mean": [round((offset + m) / (255 * r), 6) for m in mean],
        "std": [round(s / (255 * r), 6) for s in std],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m lw_lightning.models.hf_vivit --data-overrides DIR``: the ``data.*`` overrides
    that reproduce DIR's ``preprocessor_config.json`` (VivitImageProcessor defaults without one)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lw_lightning.models.hf_vivit", description=main.__doc__)
    parser.add_argument("--data-overrides", metavar="DIR", required=True, help="HF ViViT snapshot folder")
    args = parser.parse_args(argv)
    path = Path(args.data_overrides).expanduser() / "preprocessor_config.json"
    try:
        processor = json.loads(path.read_text()) if path.is_file() else {}
        values = processor_data_overrides(processor)
    except (ValueError, ConfigError) as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return 2
    fmt = lambda v: "[" + ",".join(f"{x:g}" for x in v) + "]" if isinstance(v, list) else str(v)  # noqa: E731
    print(" ".join(f"data.{k}={fmt(v)}" for k, v in values.items()))
    if not processor:
        print(f"(no {path.name} in {path.parent}: VivitImageProcessor's defaults)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
