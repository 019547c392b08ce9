"""Framework overhead: training steps/s of ``ImageClassifier`` under ``pl.Trainer`` vs a plain loop.

Both sides train the same model (same init) on the same pre-made batches from the same kind of
DataLoader, with the same AdamW parameter groups, warmup-cosine schedule and autocast. The
Lightning side is the module as users run it (its ``training_step`` logs the loss and updates
torchmetrics accuracy; TensorBoard logger, ``log_every_n_steps=10``); checkpointing, validation
and the progress bar are off, as nothing of them happens inside a training epoch anyway.
The rate is measured between the ends of consecutive steps after ``warmup_steps``, so every
per-step cost (loader, hooks, logging, optimizer, scheduler) is inside it. Rounds alternate
Lightning and plain; the median round of each is reported. Fewer than :data:`MIN_STEPS` timed
steps measure no overhead: it is reported as not measured (null).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lw_lightning.modules.classification import ImageClassifier
from lw_lightning.modules.optim import param_groups, resolve_warmup, warmup_cosine

from .common import Env
from .config import OverheadSuite

#: Lightning writes the logged metrics to the logger after every ``LOG_EVERY_N_STEPS``-th step.
LOG_EVERY_N_STEPS = 10
#: Timed steps (warm-up excluded) below which the overhead is not measured. The rate spans the
#: ``steps - 1`` intervals between the ends of the timed steps, and the logger write after a
#: step's end falls in the next interval: any ``LOG_EVERY_N_STEPS`` consecutive intervals hold
#: exactly one write, fewer hold none or more than its share. So at least one whole logging
#: period: ``LOG_EVERY_N_STEPS + 1`` step ends.
MIN_STEPS = LOG_EVERY_N_STEPS + 1


class _Batches(Dataset):
    """Pre-made batches (``batch_size=None`` loader): the loader costs next to nothing."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


class _StepClock(pl.Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.ends.append(time.perf_counter())


def _module(suite: OverheadSuite) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(model=dict(suite.model), num_classes=suite.num_classes, train_k=suite.k, warmup=0.1)


def _batches(suite: OverheadSuite, n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    size = suite.model.get("img_size", [224, 224])
    size = [size, size] if isinstance(size, int) else size
    return [
        {
            "image": torch.randn(suite.batch_size, 3, *size, generator=g),
            "label": torch.randint(suite.num_classes, (suite.batch_size,), generator=g),
        }
        for _ in range(n)
    ]


def _rate(ends: list[float], warmup: int) -> float:
    timed = ends[warmup:]
    return (len(timed) - 1) / (timed[-1] - timed[0])


def lightning_round(suite: OverheadSuite, batches: list, env: Env) -> float:
    module = _module(suite)
    clock = _StepClock()
    precision = "bf16-mixed" if env.dtype == torch.bfloat16 else "32-true"
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator=env.device.type,
            devices=1,
            precision=precision,
            max_steps=len(batches),
            max_epochs=1,
            logger=pl.loggers.TensorBoardLogger(tmp, name="overhead"),
            log_every_n_steps=LOG_EVERY_N_STEPS,
            callbacks=[clock],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, train_dataloaders=DataLoader(_Batches(batches), batch_size=None))
    return _rate(clock.ends, suite.warmup_steps)


def plain_round(suite: OverheadSuite, batches: list, env: Env) -> float:
    module = _module(suite).to(env.device)  # same init; only its nn.Modules are used
    net, head = module.net, module.head
    net.train()
    if module.hparams.freeze_selector and module.is_lookwhere:
        net.selector.eval()
    opt = torch.optim.AdamW(
        param_groups(module.named_parameters(), module.hparams.weight_decay), lr=module.hparams.lr, betas=(0.9, 0.999)
    )
    total = len(batches)
    sched = warmup_cosine(opt, resolve_warmup(module.hparams.warmup, total), total, module.hparams.min_lr_ratio)
    ends = []
    for batch in DataLoader(_Batches(batches), batch_size=None):
        images, labels = batch["image"].to(env.device, non_blocking=True), batch["label"].to(env.device, non_blocking=True)
        with env.autocast():
            out = net(images, k=suite.k) if module.is_lookwhere else net(images)
            loss = F.cross_entropy(head(out["cls"]).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        env.sync()
        ends.append(time.perf_counter())
    return _rate(ends, suite.warmup_steps)


def run_overhead(suite: OverheadSuite, env: Env, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    batches = _batches(suite, suite.warmup_steps + suite.steps)
    rates: dict[str, list[float]] = {"lightning": [], "plain": []}
    for r in range(suite.rounds):
        for name, fn in (("lightning", lightning_round), ("plain", plain_round)):
            rates[name].append(fn(suite, batches, env))
            log(f"overhead round {r + 1}: {name} {rates[name][-1]:.2f} steps/s")
    light, plain = statistics.median(rates["lightning"]), statistics.median(rates["plain"])
    measured = suite.steps >= MIN_STEPS
    if measured:
        log(
            f"Lightning step-time overhead {(plain / light - 1) * 100:+.1f}% "
            f"({light:.2f} vs {plain:.2f} steps/s, {suite.steps} timed steps)"
        )
    else:
        log(
            f"Lightning step-time overhead not measured: too few timed steps ({suite.steps} after "
            f"{suite.warmup_steps} warm-up steps; at least {MIN_STEPS} needed)"
        )
    model = ", ".join(f"{k}={v}" for k, v in suite.model.items())
    return [
        dict(
            model=model,
            k=suite.k,
            batch_size=suite.batch_size,
            steps=suite.steps,
            rounds=suite.rounds,
            lightning_steps_s=light,
            plain_steps_s=plain,
            lightning_all=rates["lightning"],
            plain_all=rates["plain"],
            min_steps=MIN_STEPS,
            slowdown=plain / light - 1.0 if measured else None,  # null: not measured
        )
    ]
