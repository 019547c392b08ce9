"""One-line warnings about the hardware a run is about to use (printed once, on global rank 0).

- A recipe marked ``requires: gpu`` (ViT-B on ImageNet, ADE20K, Traffic Signs at 994 px,
  Kinetics) started without a CUDA device: ``fit`` would not finish on a CPU, so say so at start
  and name the CPU smoke test (``smoke=true``); ``validate``/``test``/``predict`` are told only
  what is true of them (every batch on the CPU) and how to limit the batches. A model shrunk
  below ViT-B's width (``smoke=true``, ``module.model.preset=tiny``) is not what the recipe is
  sized for: no warning.
- ``bf16`` / ``16`` precision on a CPU accelerator: autocast on CPU runs far slower than fp32
  (bf16-mixed measured about 10x slower than 32-true on the 2-core development CPU).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from .models.config import PRESETS as IMAGE_PRESETS
from .models.vivit_presets import PRESETS as VIDEO_PRESETS

# measured with the 994 px Traffic Signs recipe (LookWhere ViT-B, k=5%) on the 2-core CPU,
# fp32: 27 s per training step of batch 2 (a bf16-mixed step of batch 2 ran over 4 minutes)
CPU_STEP_NOTE = "about 14 s per image per training step for ViT-B at 994 px in fp32 on 2 cores, ~10x more in bf16"
#: ViT-B's width: the recipes marked ``requires: gpu`` are ViT-B or larger, and the costs above are ViT-B's
GPU_WIDTH = 768
#: the split each evaluation command runs over, and its batch-limit key
EVAL_SPLITS = {"validate": "val", "test": "test", "predict": "predict"}


def _emit(line: str) -> None:
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(line, file=sys.stderr, flush=True)


def _is_smoke_run(cfg: DictConfig, command: str) -> bool:
    """fast_dev_run, or a batch-count limit on the loop the command runs: a CPU smoke test."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("fast_dev_run"):
        return True
    keys = {
        "fit": ("limit_train_batches",),
        "validate": ("limit_val_batches",),
        "test": ("limit_test_batches",),
        "predict": ("limit_predict_batches",),
    }
    # an int is a number of batches; a float is a fraction of the (full-size) epoch
    return any(isinstance(trainer.get(k), int) for k in keys.get(command, ()))


def _no_gpu(cfg: DictConfig) -> bool:
    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    return accelerator == "cpu" or not torch.cuda.is_available()


def _model_width(cfg: DictConfig) -> int | None:
    """``module.model.embed_dim``, set or from its preset (image or ViViT table); None: cannot tell."""
    model: Any = (cfg.get("module") or {}).get("model") or {}
    if model.get("embed_dim") is not None:
        return int(model.get("embed_dim"))
    presets = VIDEO_PRESETS if "num_frames" in model else IMAGE_PRESETS
    width = presets.get(str(model.get("preset", "base")), {}).get("embed_dim")
    return None if width is None else int(width)


def _shrunk(cfg: DictConfig) -> bool:
    """A model narrower than ViT-B: ``smoke=true`` or a smaller preset, which a CPU can run."""
    width = _model_width(cfg)
    return bool(cfg.get("smoke")) or (width is not None and width < GPU_WIDTH)


def _describe(cfg: DictConfig, command: str = "fit") -> str:
    """What makes the recipe heavy, from its own values: model, input, batch, precision, schedule
    (the schedule only for ``fit``)."""
    parts: list[str] = []
    model: Any = (cfg.get("module") or {}).get("model") or {}
    name = "-".join(str(model[k]) for k in ("arch", "preset") if model.get(k)) or "model"
    size = model.get("img_size")
    if size is not None:
        size_s = "x".join(str(v) for v in size) if not isinstance(size, (int, str)) else f"{size}x{size}"
        frames = model.get("num_frames")
        name += f" at {frames}x{size_s}" if frames else f" at {size_s}"
    parts.append(name)
    data = cfg.get("data") or {}
    if data.get("batch_size") is not None:
        parts.append(f"batch {data.get('batch_size')}")
    trainer = cfg.get("trainer") or {}
    parts.append(str(trainer.get("precision", "32-true")))
    if command == "fit" and trainer.get("max_steps") not in (None, -1):
        parts.append(f"{trainer.get('max_steps')} steps")
    elif command == "fit" and trainer.get("max_epochs") is not None:
        parts.append(f"{trainer.get('max_epochs')} epochs")
    return ", ".join(parts)


def warn_if_gpu_recipe_on_cpu(cfg: DictConfig, command: str) -> str | None:
    """Print (and return) the one-line warning for a ``requires: gpu`` recipe without a GPU."""
    if cfg.get("requires") != "gpu" or not _no_gpu(cfg) or _is_smoke_run(cfg, command) or _shrunk(cfg):
        return None
    if command in EVAL_SPLITS:
        # no training here, and no measured evaluation cost: only what is certain
        split = EVAL_SPLITS[command]
        cost = f"{command} runs it over every {split} batch on the CPU"
        hint = f"for a quick check add trainer.limit_{split}_batches=2"
    else:
        cost = f"on a CPU a training step takes minutes ({CPU_STEP_NOTE}), so it will not finish in useful time"
        hint = "for a CPU smoke test of its data and code add smoke=true (a tiny model, 2 batches)"
    line = (
        f"warning: recipe '{cfg.get('name')}' is sized for a GPU ({_describe(cfg, command)}) "
        f"and no CUDA device will be used: {cost}; {hint}"
    )
    _emit(line)
    return line


def warn_if_low_precision_on_cpu(trainer: Any) -> str | None:
    """Print (and return) one line when a bf16/fp16 precision runs on the CPU accelerator."""
    from pytorch_lightning.accelerators import CPUAccelerator

    precision = str(trainer.precision)
    if not isinstance(trainer.accelerator, CPUAccelerator) or not (precision.startswith(("bf16", "16"))):
        return None
    line = (
        f"warning: precision {precision} on the CPU is much slower than fp32 (bf16-mixed measured about 10x slower "
        "than 32-true on a 2-core CPU); add trainer.precision=32-true unless you are testing the precision itself"
    )
    _emit(line)
    return line
