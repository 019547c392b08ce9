"""TensorBoard pictures of where the model looks, on a fixed set of validation samples.

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

Pictures are built on global rank 0 only (no collective operations inside), every
``every_n_epochs`` validation epochs and after a ``validate`` run; models with nothing to show
(the full-resolution ViT) are skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

from ..viz import selection_overlay, tile


def _minmax_uint8(x: Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return (x.numpy() * 255).round().astype(np.uint8)


def heat_overlay(frame: Tensor, heat: Tensor, alpha: float = 0.6) -> Image.Image:
    """``frame`` (3,H,W) any range, ``heat`` (h,w) any range -> RGB picture, heat upsampled in red."""
    rgb = _minmax_uint8(frame).transpose(1, 2, 0).astype(np.float32)
    h, w = rgb.shape[:2]
    m = heat.detach().float().cpu()[None, None]
    m = torch.nn.functional.interpolate(m, size=(h, w), mode="nearest")[0, 0]
    m = ((m - m.min()) / (m.max() - m.min() + 1e-8)).numpy()[..., None]
    red = np.array([255.0, 30.0, 30.0], dtype=np.float32)
    out = rgb * (1 - alpha * m) + red * (alpha * m)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def token_map_row(frame: Tensor, maps: Tensor, cell: int = 64) -> list[Image.Image]:
    """``frame`` (3,H,W) and its ``maps`` (S,h,w) -> ``cell``-px pictures: the frame, then one heat
    overlay per learned token."""
    size = (cell, cell)
    row = [Image.fromarray(_minmax_uint8(frame).transpose(1, 2, 0)).resize(size, Image.Resampling.NEAREST)]
    row.extend(heat_overlay(frame, maps[s]).resize(size, Image.Resampling.NEAREST) for s in range(maps.shape[0]))
    return row


def video_lookwhere_of(pl_module: pl.LightningModule) -> torch.nn.Module | None:
    """The :class:`~lw_lightning.models.video_lookwhere.VideoLookWhere` a module trains, if any."""
    from ..models.video_lookwhere import VideoLookWhere

    for net in (getattr(pl_module, "student", None), getattr(getattr(pl_module, "net", None), "lookwhere", None)):
        if isinstance(net, VideoLookWhere):
            return net
    return None


def tokenlearner_maps(net: torch.nn.Module) -> Tensor | None:
    """The ``[N, S, L]`` attention maps of the first TokenLearner in ``net`` from its latest call."""
    for module in net.modules():
        maps = getattr(module, "last_maps", None)
        if isinstance(maps, Tensor):
            return maps
    return None


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
            self._batch = collate(samples)
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
        """Tag -> picture for this module (empty when the model has nothing to show)."""
        from ..models.lookwhere import LookWhere
        from ..models.tokenlearner_vit import TokenLearnerViT
        from ..modules.distill import LookWhereDistill
        from ..modules.video import VideoClassifier

        device = pl_module.device
        video_lw = video_lookwhere_of(pl_module)
        if video_lw is not None and "video" in batch:
            return self._video_selection(pl_module, video_lw, batch)
        if isinstance(pl_module, VideoClassifier):
            return self._tokenlearner(pl_module, batch["video"].to(device))
        net = pl_module.student if isinstance(pl_module, LookWhereDistill) else getattr(pl_module, "net", None)
        if isinstance(net, TokenLearnerViT) and "image" in batch:
            return self._image_tokenlearner(net, batch["image"].to(device))
        if not isinstance(net, LookWhere) or "image" not in batch:
            return {}
        images = batch["image"].to(device)
        hp = pl_module.hparams
        if isinstance(pl_module, LookWhereDistill):
            k = hp.val_k if hp.val_k is not None else hp.k_max
        else:
            k = hp.get("eval_k")
        out = net(images, k=k)
        boxes = batch.get("box")
        overlays = [
            selection_overlay(images[i].cpu(), out["selector_map"][i], out["selected"][i], net.cfg.patch_size,
                              boxes[i].tolist() if isinstance(boxes, Tensor) else None)
            for i in range(images.shape[0])
        ]
        return {"images/selection": tile(overlays, ncols=self.ncols)}

    def _video_selection(self, pl_module: pl.LightningModule, net: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Image.Image]:
        """Video LookWhere: rows of temporal slices with map, kept tubelets and target box."""
        from ..viz_video import video_selection_picture

        video = batch["video"].to(pl_module.device)
        if video.ndim == 6:  # evaluation views [B, V, C, T, H, W]: the first view
            video = video[:, 0]
        hp = pl_module.hparams
        k = hp.get("eval_k") if "eval_k" in hp else (hp.get("val_k") if hp.get("val_k") is not None else hp.get("k_max"))
        out = net(video, k=k)
        track = batch.get("track") if batch["video"].ndim == 5 else None
        picture = video_selection_picture(video.cpu(), out["selector_map"], out["selected"], net.cfg.grid, net.cfg.tubelet, track)
        return {"images/video_selection": picture}

    def _tokenlearner(self, pl_module: pl.LightningModule, video: Tensor) -> dict[str, Image.Image]:
        if video.ndim == 6:  # evaluation views [B, V, C, T, H, W]: the first view
            video = video[:, 0]
        cfg = pl_module.model_cfg  # type: ignore[attr-defined]
        if cfg.num_tokens <= 0:
            return {}
        pl_module(video)
        maps = tokenlearner_maps(pl_module.net)  # type: ignore[arg-type]
        if maps is None:
            return {}
        b = video.shape[0]
        nt, nh, nw = cfg.grid
        tub_t = cfg.num_frames // nt
        if maps.shape[0] != b * nt or maps.shape[-1] != nh * nw:
            return {}  # TokenLearner placed where tokens no longer form the frame grid
        maps = maps.reshape(b, nt, maps.shape[1], nh, nw)
        result = {}
        for i in range(b):
            rows = []
            for t in range(nt):
                rows.extend(token_map_row(video[i, :, t * tub_t + tub_t // 2], maps[i, t]))
            result[f"images/tokenlearner/{i}"] = tile(rows, ncols=1 + maps.shape[2], pad=2)
        return result

    def _image_tokenlearner(self, net: torch.nn.Module, images: Tensor) -> dict[str, Image.Image]:
        maps = net(images)["maps"]  # [B, S, gh*gw], row-major over the patch grid
        gh, gw = net.grid(images)  # type: ignore[operator]
        maps = maps.reshape(maps.shape[0], maps.shape[1], gh, gw)
        cells = [cell for i in range(images.shape[0]) for cell in token_map_row(images[i], maps[i], cell=96)]
        return {"images/tokenlearner": tile(cells, ncols=1 + maps.shape[1], pad=2)}
