"""``smoke=true``: a recipe as a CPU smoke test of its real data path, in about a minute.

A GPU recipe (ViT-B at 994 px, batches of 16, bf16) takes minutes per training step on a CPU, so
``trainer.fast_dev_run=true`` alone does not finish there. ``smoke=true`` on the command line stands
for overrides of the composed recipe, placed before the command line's own (which win):

- model: the ``tiny`` preset, randomly initialised (no pretrained file; a distillation gets a tiny
  random teacher instead of its checkpoint), with the recipe's input layout kept (image size,
  patch size, selector input; frames, tubelet), so the token grid and k are the recipe's; an
  integer TokenLearner block index is scaled to the tiny depth;
- trainer: ``fast_dev_run=2`` (2 training and 2 validation batches, or 2 of the evaluated split; no
  logger, no checkpoints) in ``32-true`` (bf16 ran about 10x slower than fp32 on a CPU);
- data: batches of 2, loaded in the main process. The DataModule, its root, transforms and
  resolution stay the recipe's.

No torch here: the overrides are made while the command line is checked (:mod:`lw_lightning.config`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .models.config import PRESETS as IMAGE_PRESETS
from .models.vivit_presets import PRESETS as VIDEO_PRESETS

#: the model preset of a smoke run
PRESET = "tiny"
#: training and validation batches (``trainer.fast_dev_run``)
BATCHES = 2
#: samples per batch: even, as timm's Mixup (the ImageNet recipes) pairs a batch's samples
BATCH_SIZE = 2
#: preset fields that fix the input layout (token grid, k, selector input): kept at the recipe's
IMAGE_LAYOUT = ("patch_size", "reg_tokens", "selector_img_size")
VIDEO_LAYOUT = ("img_size", "num_frames", "tubelet")
#: fields that size the network: the tiny preset's, also where the recipe sets them itself
SIZE_FIELDS = ("embed_dim", "depth", "num_heads", "temporal_depth")


def _value(value: Any) -> str:
    """``value`` in Hydra's override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, (dict, DictConfig)):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _has(node: DictConfig, key: str) -> bool:
    """Whether ``node`` holds ``key``, also as ``???`` (for which ``in`` is False)."""
    return key in node.keys()  # noqa: SIM118 (DictConfig.__contains__ is False for ???)


def _model_overrides(model: DictConfig) -> dict[str, Any]:
    """``module.model`` keys that make the recipe's model tiny with its input layout."""
    video = _has(model, "num_frames")
    presets, layout = (VIDEO_PRESETS, VIDEO_LAYOUT) if video else (IMAGE_PRESETS, IMAGE_LAYOUT)
    recipe = presets.get(str(model.get("preset", "base")), {})
    tiny = presets[PRESET]
    out: dict[str, Any] = {"preset": PRESET}
    # the recipe's layout where the tiny preset would change it (vit_b16: patch 16, no registers)
    out |= {k: recipe[k] for k in layout if not _has(model, k) and k in recipe and recipe[k] != tiny.get(k)}
    out |= {k: tiny[k] for k in SIZE_FIELDS if _has(model, k) and k in tiny}
    depth, recipe_depth = int(tiny["depth"]), int(model.get("depth", recipe.get("depth", tiny["depth"])))
    if isinstance(model.get("selector_depth"), int) and model.selector_depth > depth:
        out["selector_depth"] = depth // 2
    loc = model.get("tokenlearner_loc")
    if isinstance(loc, int) and not isinstance(loc, bool):  # a block index; a fraction scales by itself
        out["tokenlearner_loc"] = round(loc * depth / recipe_depth)
    if _has(model, "pretrained"):
        out["pretrained"] = None
    return out


def _teacher_overrides(name: str, video: bool) -> dict[str, Any]:
    """``module.<name>`` keys for a tiny random teacher (tests' way to build one)."""
    if name == "teacher" and video:
        # the student's tubelet grid and the tiny width: its targets line up with a tiny student
        grid = {k: f"${{module.model.{k}}}" for k in VIDEO_LAYOUT}
        return {"checkpoint": None, "model": {"preset": PRESET, **grid}}
    return {"name": None, "checkpoint": None, "preset": PRESET}


def smoke_overrides(cfg: DictConfig) -> list[str]:
    """The ``key=value`` overrides ``smoke=true`` stands for, for the composed recipe ``cfg``."""
    out = {"trainer.fast_dev_run": BATCHES, "trainer.precision": "32-true"}
    data = cfg.get("data")
    if isinstance(data, DictConfig):
        out |= {"data.batch_size": BATCH_SIZE, "data.eval_batch_size": BATCH_SIZE, "data.num_workers": 0}
    module = cfg.get("module")
    model = module.get("model") if isinstance(module, DictConfig) else None
    if isinstance(model, DictConfig):
        out |= {f"module.model.{k}": v for k, v in _model_overrides(model).items()}
        for name in ("teacher", "image_teacher"):
            if isinstance(module.get(name), DictConfig):
                teacher = _teacher_overrides(name, _has(model, "num_frames"))
                out |= {f"module.{name}.{k}": v for k, v in teacher.items()}
    return [f"{key}={_value(OmegaConf.to_object(v) if OmegaConf.is_config(v) else v)}" for key, v in out.items()]
