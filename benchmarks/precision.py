"""Training losses of every task on one fixed batch under fp32, bf16-mixed and 16-mixed.

Used by the tests (bf16-mixed on CPU) and by ``benchmarks/amp_check.py`` on a GPU. Mixed
precision here is what Lightning's ``precision="bf16-mixed"`` / ``"16-mixed"`` does in the
forward pass: ``torch.autocast`` with bfloat16 / float16, weights kept in fp32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

TASKS = ("classification", "segmentation", "distill", "video")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def tiny_task(task: str, size: int = 112, batch_size: int = 4, seed: int = 0) -> tuple[torch.nn.Module, dict[str, Tensor]]:
    """A seeded small module of ``task`` and a fixed batch for it (CPU tensors)."""
    g = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed)
    lw = {"arch": "lookwhere", "preset": "tiny", "img_size": [size, size], "selector_img_size": size // 2}
    images = torch.randn(batch_size, 3, size, size, generator=g)
    if task == "classification":
        from .modules.classification import ImageClassifier

        module: Any = ImageClassifier(lw, num_classes=4, train_k=16, freeze_selector=False, selector_gate=True)
        return module, {"image": images, "label": torch.randint(0, 4, (batch_size,), generator=g)}
    if task == "segmentation":
        from .modules.segmentation import Segmenter

        module = Segmenter(lw, num_classes=4, train_k=16)
        return module, {"image": images, "mask": torch.randint(0, 4, (batch_size, size, size), generator=g)}
    if task == "distill":
        from .modules.distill import LookWhereDistill

        teacher = {"name": None, "preset": "tiny", "img_size": [size, size]}
        module = LookWhereDistill(lw, teacher, k_min=16, k_max=16, init_from_teacher=True)
        return module, {"image": images}
    if task == "video":
        from .modules.video import VideoClassifier

        module = VideoClassifier({"preset": "tiny", "num_tokens": 4, "tokenlearner_loc": 2, "tokenlearner_version": "v1.0"}, num_classes=5)
        torch.nn.init.normal_(module.net.head.weight, std=0.02)  # zero-initialised head: make the loss depend on the net
        c = module.model_cfg
        video = torch.randn(batch_size, 3, c.num_frames, c.img_size, c.img_size, generator=g)
        return module, {"video": video, "label": torch.randint(0, 5, (batch_size,), generator=g)}
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def training_loss(task: str, module: torch.nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The loss ``training_step`` of ``task`` computes on ``batch`` (without logging)."""
    if task == "classification":
        return module.model_step(batch, module.hparams.train_k)[0]  # type: ignore[operator]
    if task == "segmentation":
        logits, _ = module(batch["image"], k=module.hparams.train_k)
        return module._loss_and_preds(logits, batch)[0]  # type: ignore[operator]
    if task == "distill":
        return module.losses(batch["image"], 16)[0]["total"]  # type: ignore[operator]
    return F.cross_entropy(module(batch["video"]).float(), batch["label"])


def loss_under(task: str, module: torch.nn.Module, batch: dict[str, Tensor], precision: str, device: str) -> float:
    """Loss value of a forward + backward pass at ``precision`` on ``device`` (gradients are
    computed too, so a non-finite backward shows up as a non-finite gradient norm: then NaN)."""
    module = module.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    module.zero_grad(set_to_none=True)
    if precision == "32-true":
        loss = training_loss(task, module, batch)
    else:
        with torch.autocast(device_type=torch.device(device).type, dtype=_AUTOCAST[precision]):
            loss = training_loss(task, module, batch)
    loss.backward()
    grads = [p.grad.float().norm() for p in module.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g) for g in grads):
        return math.nan
    return float(loss.detach().float())


def compare(device: str = "cpu", precisions: tuple[str, ...] = PRECISIONS, tasks: tuple[str, ...] = TASKS, size: int = 112) -> dict[str, dict[str, float]]:
    """``{task: {precision: loss}}`` on the same weights and batch for every precision."""
    table: dict[str, dict[str, float]] = {}
    for task in tasks:
        module, batch = tiny_task(task, size=size)
        state = {k: v.clone() for k, v in module.state_dict().items()}
        table[task] = {}
        for precision in precisions:
            module.load_state_dict(state)
            table[task][precision] = loss_under(task, module, batch, precision, device)
    return table
