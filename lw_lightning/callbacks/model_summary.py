"""Lightning's model summary, with a FLOP count that is true or absent.

Lightning counts FLOPs for its summary only from a module's ``example_input_array``, which these
modules do not set, so its table ended in ``0 Total Flops``: false for a project about FLOPs. Here
the line is the per-sample forward count of :class:`~lw_lightning.callbacks.perf.FlopsPerSample`
(logged as ``perf/gflops_per_sample``) when that callback counted it before the summary, and is
left out otherwise (``callbacks.flops=null``, a fast_dev_run).
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table, get_human_readable_count

from .perf import FlopsPerSample

log = logging.getLogger("pytorch_lightning.callbacks.model_summary")  # where Lightning's own summary goes

FLOPS_LINE = "Total Flops"


class ModelSummary(pl.callbacks.ModelSummary):
    """``pl.callbacks.ModelSummary`` whose last line is the forward FLOPs of one sample, or nothing.

    Put it after :class:`FlopsPerSample` in the callback list (both run at ``on_fit_start``)."""

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)
        self._flops: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counted = [cb.flops for cb in trainer.callbacks if isinstance(cb, FlopsPerSample)]  # type: ignore[attr-defined]
        self._flops = counted[0] if counted else None
        super().on_fit_start(trainer, pl_module)

    def summarize(  # type: ignore[override]  # an instance method: it reads the count found above
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        lines = table.split("\n")
        if lines[-1].endswith(FLOPS_LINE) and self._flops:
            lines[-1] = f"{get_human_readable_count(self._flops):<10}FLOPs per sample (forward, perf/gflops_per_sample)"
        elif lines[-1].endswith(FLOPS_LINE):
            lines.pop()
        log.info("\n" + "\n".join(lines))
