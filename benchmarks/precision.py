"""Training losses of every task on one fixed batch under fp32, bf16-mixed and 16-mixed.

Used by the tests (bf16-mixed on CPU) and, on a GPU, as a command that prints the table and the
relative difference to fp32 (a loss reported as nan means the loss or a gradient was not finite)::

    python -m benchmarks.precision               # cuda if available, else cpu (fp32 + bf16 only)
    python -m benchmarks.precision --device cuda --size 224

Mixed
precision here is what Lightning's ``precision="bf16-mixed"`` / ``"16-mixed"`` does in the
forward pass: ``torch.autocast`` with bfloat16 / float16, weights kept in fp32.
"""

from __future__ import annotations

import argparse
import math
import sys
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
        from lw_lightning.modules.classification import ImageClassifier

        module: Any = ImageClassifier(lw, num_classes=4, train_k=16, freeze_selector=False, selector_gate=True)
        return module, {"image": images, "label": torch.randint(0, 4, (batch_size,), generator=g)}
    if task == "segmentation":
        from lw_lightning.modules.segmentation import Segmenter

        module = Segmenter(lw, num_classes=4, train_k=16)
        return module, {"image": images, "mask": torch.randint(0, 4, (batch_size, size, size), generator=g)}
    if task == "distill":
        from lw_lightning.modules.distill import LookWhereDistill

        teacher = {"name": None, "preset": "tiny", "img_size": [size, size]}
        module = LookWhereDistill(lw, teacher, k_min=16, k_max=16, init_from_teacher=True)
        return module, {"image": images}
    if task == "video":
        from lw_lightning.modules.video import VideoClassifier

        module = VideoClassifier(
            {"preset": "tiny", "num_tokens": 4, "tokenlearner_loc": 2, "tokenlearner_version": "v1.0"}, num_classes=5
        )
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


def compare(
    device: str = "cpu", precisions: tuple[str, ...] = PRECISIONS, tasks: tuple[str, ...] = TASKS, size: int = 112
) -> dict[str, dict[str, float]]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=112, help="image side (multiple of 28)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = parser.parse_args(argv)
    precisions = PRECISIONS if args.device.startswith("cuda") else ("32-true", "bf16-mixed")
    if args.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        precisions = ("32-true", "16-mixed")
    table = compare(args.device, precisions, tuple(args.tasks), size=args.size)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}  torch {torch.__version__}  size {args.size}")
    print(f"{'task':<16}" + "".join(f"{p:>14}" for p in precisions) + "".join(f"{'rel ' + p:>18}" for p in precisions[1:]))
    ok = True
    for task, losses in table.items():
        rel = [abs(losses[p] - losses["32-true"]) / abs(losses["32-true"]) for p in precisions[1:]]
        ok &= all(math.isfinite(losses[p]) for p in precisions) and all(r < 3e-2 for r in rel)
        print(f"{task:<16}" + "".join(f"{losses[p]:>14.6f}" for p in precisions) + "".join(f"{r:>18.2e}" for r in rel))
    print("all finite and within 3% of fp32" if ok else "FAILED: a loss is not finite or differs from fp32 by 3% or more")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
