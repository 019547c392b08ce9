"""TensorBoard pictures of where the model looks, on a fixed set of validation samples.

The pictures come from the LightningModule's ``example_images(batch, ncols=...)`` hook, which
returns ``{tag: PIL image}`` (built with :mod:`lw_lightning.viz`); a module without the hook, or
whose model has nothing to show (the full-resolution ViT), is skipped. What the modules show:

* LookWhere (classification, segmentation, distillation): the selector map as a heat layer over
  the image, the selected high-res patches outlined, and the ground-truth sign box when the data
  has one (``box``: synthetic signs, traffic signs). Tag ``images/selection``.
* video LookWhere (distillation, fine-tuning): one row per clip, one column per temporal slice:
  the slice's central frame, the selector map over it, the kept tubelets and the target's box on
  synthetic motion. Tag ``images/video_selection``.
* ViViT with TokenLearner: for each sample, one row per temporal slice: the slice's middle frame,
  then each learned token's attention map over that frame. Tag ``images/tokenlearner/<i>``.
* TokenLearner-ViT (images): one row per sample: the image, then each learned token's attention
  map over the patch grid (of the first TokenLearner). Tag ``images/tokenlearner``.

Heat layers are red over the image in grey (:func:`lw_lightning.viz.heat_layer`), so the image's own
colours cannot pass for heat.

Pictures are built on global rank 0 only (no collective operations inside), every
``every_n_epochs`` validation epochs and after a ``validate`` run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import default_collate


class SelectionImages(pl.Callback):
    """Logs pictures of LookWhere selections / TokenLearner maps (see the module docstring).

    Args:
        every_n_epochs: log at validation epochs ``0, n, 2n, ...`` (and always after ``validate``).
        num_samples: validation samples shown (the first ones of the validation set: fixed).
        ncols: pictures per row of the LookWhere grid.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 8, ncols: int = 4) -> None:
        if every_n_epochs < 1 or num_samples < 1:
            raise ValueError("callbacks.images: every_n_epochs and num_samples must be >= 1")
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.ncols = ncols
        self._batch: dict[str, Any] | None = None
        self.logged_tags: list[str] = []

    def _fixed_batch(self, trainer: pl.Trainer) -> dict[str, Any] | None:
        if self._batch is None:
            dm = trainer.datamodule
            ds = getattr(dm, "datasets", {}).get("val") if dm is not None else None
            if ds is None:
                return None
            samples = [ds[i] for i in range(min(self.num_samples, len(ds)))]
            collate = getattr(dm, "collate_fn", None) or default_collate
            # the DataModule's device-side step too (uint8 video clips -> normalised float)
            self._batch = dm.on_after_batch_transfer(collate(samples), 0)
        return self._batch

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        if trainer.state.fn == "fit" and trainer.current_epoch % self.every_n_epochs:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        batch = self._fixed_batch(trainer)
        if batch is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                pictures = self.pictures(pl_module, batch)
        finally:
            pl_module.train(was_training)
        for tag, picture in pictures.items():
            experiment.add_image(tag, np.asarray(picture), global_step=trainer.global_step, dataformats="HWC")
            if tag not in self.logged_tags:
                self.logged_tags.append(tag)

    def pictures(self, pl_module: pl.LightningModule, batch: dict[str, Any]) -> dict[str, Image.Image]:
        """Tag -> picture for this module, from its ``example_images`` hook (empty without one)."""
        hook = getattr(pl_module, "example_images", None)
        return hook(batch, ncols=self.ncols) if callable(hook) else {}
