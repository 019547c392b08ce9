"""Write per-sample predictions of the ``predict`` command to one CSV in the run directory, and
segmentation masks as palette PNGs next to it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter

from ..data.palette import indexed_palette
from ..errors import ConfigError

#: CSV columns per kind of output (:func:`output_kind`)
COLUMNS = {
    "classification": ["index", "source", "label", "pred", "pred_name", "score", "selected", "token_peaks"],
    "segmentation": ["index", "source", "mask", "selected"],
    "selection": ["index", "source", "selected"],
}


def sample_source(dataset: Any, index: int) -> str:
    """Where sample ``index`` came from: ``dataset.source(index)`` (a file relative to the data
    root, or a synthetic sample's ``split/index``), else ``predict/<index>``."""
    source = getattr(dataset, "source", None)
    return str(source(index)) if callable(source) else f"predict/{index}"


def predict_dataset(trainer: pl.Trainer) -> Any:
    """The dataset the predict loop read (from the DataModule, else from the loader)."""
    datamodule = getattr(trainer, "datamodule", None)
    datasets = getattr(datamodule, "datasets", None)
    if isinstance(datasets, dict) and "predict" in datasets:
        return datasets["predict"]
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders
    return getattr(loader, "dataset", None)


def output_kind(out: dict[str, Any]) -> str:
    """``segmentation`` (masks), ``classification`` (a predicted class) or ``selection`` (only
    where a selector looks: the distillation modules)."""
    if "masks" in out or "mask_path" in out:
        return "segmentation"
    return "classification" if "pred" in out else "selection"


def save_mask(path: Path, values: np.ndarray, palette: np.ndarray) -> None:
    """(H, W) label values -> a mode "P" PNG with ``palette`` ((n, 3) uint8; values beyond it,
    e.g. of a model with more classes than the DataModule, are black)."""
    top = int(values.max()) if values.size else 0
    if top > 255:
        raise ConfigError(f"cannot write {path}: label value {top} > 255 does not fit a palette PNG")
    if top >= len(palette):
        palette = np.vstack([palette, np.zeros((top + 1 - len(palette), 3), dtype=np.uint8)])
    h, w = values.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(values, dtype=np.uint8).tobytes())
    img.putpalette(palette.astype(np.uint8).tobytes())
    img.save(path)


def _indices(values: Any) -> str:
    return " ".join(str(int(j)) for j in values.tolist())


class PredictionWriter(BasePredictionWriter):
    """One CSV row per sample, sorted by index; its columns depend on the module's outputs.

    * classification: ``index, source, label, pred, pred_name, score, selected, token_peaks``.
      ``pred`` is -1 (score 0) for a file that could not be decoded. ``token_peaks``: for each
      learned token of a TokenLearner-ViT, the patch index its attention map weighs most.
    * segmentation: ``index, source, mask, selected``. ``mask`` is the PNG written for the sample,
      relative to the CSV's folder: ``predictions/masks/<source file stem>.png`` (``<stem>_<index>``
      if another source has the same stem), mode "P", at the
      image's original size when the DataModule keeps it (ADE20K; the synthetic data's images
      are rendered at the input size), holding the predicted class of each pixel as the dataset
      stores its labels (class c + ``label_offset`` of the DataModule: ADE20K 1..150, 0 being its
      "other") with the DataModule's ``label_palette()``. Empty for an unreadable file.
    * selection (distillation): ``index, source, selected``.

    ``source`` names the sample: its image or video file relative to the data root, or
    ``<split>/<index>`` for synthetic data. ``selected``: the patch (or tubelet) indices the
    selector keeps, row-major, highest score first; empty for models without a selector and for
    unreadable files of the selection output.

    Masks are saved batch by batch and dropped from the outputs the loop keeps (full-size maps of
    a whole validation set would not fit in memory); the CSV is written at the end. Under DDP
    each rank saves its own masks, every rank's rows are gathered and rank 0 writes the CSV.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        class_names: list[str] | None = None,
        filename: str = "predictions.csv",
        mask_dir: str = "predictions/masks",
    ) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.output_dir = output_dir
        self.class_names = class_names
        self.filename = filename
        self.mask_dir = mask_dir
        self.folder = Path(output_dir or ".")
        self.path: Path | None = None  # the CSV, once written (rank 0)
        self.masks_written = 0  # rows with a mask, over all ranks (rank 0)
        self.kind: str | None = None  # output_kind of the last predict (rank 0)
        self._offset = 0
        self._palette: np.ndarray | None = None
        self._names: set[str] = set()  # mask files written by this rank in this predict

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # once, on every rank: trainer.log_dir is a broadcast under DDP, and ranks may see
        # different numbers of batches
        self.folder = Path(self.output_dir or trainer.log_dir or ".")
        self._palette = None  # read from the DataModule at the first mask
        self._names = set()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        masks = prediction.pop("masks", None) if isinstance(prediction, dict) else None
        if masks is None:
            return
        if self._palette is None:
            # the DataModule's label convention (a classification DataModule may have more
            # classes than a palette holds: it is only asked once there are masks)
            datamodule = getattr(trainer, "datamodule", None)
            self._offset = int(getattr(datamodule, "label_offset", 0))
            palette = getattr(datamodule, "label_palette", None)
            self._palette = palette() if callable(palette) else indexed_palette(256)
        folder = self.folder / self.mask_dir
        folder.mkdir(parents=True, exist_ok=True)
        dataset = predict_dataset(trainer)
        paths = []
        for index, mask in zip(prediction["index"].tolist(), masks):
            if mask is None:  # unreadable file: no prediction
                paths.append("")
                continue
            name = f"{Path(sample_source(dataset, index)).stem}.png"
            if name in self._names:  # two sources with the same stem (other folders): keep both
                name = f"{Path(name).stem}_{index}.png"
            self._names.add(name)
            save_mask(folder / name, mask.numpy().astype(np.int64) + self._offset, self._palette)
            paths.append(f"{self.mask_dir}/{name}")
        prediction["mask_path"] = paths

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        rows = []
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        dataset = predict_dataset(trainer)
        kind = self.kind = output_kind(batches[0]) if batches else "classification"
        for out in batches:
            for i in range(out["index"].shape[0]):
                index = int(out["index"][i])
                row = {"index": index, "source": sample_source(dataset, index), **self._fields(kind, out, i)}
                rows.append(row)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not trainer.is_global_zero:
            return
        rows.sort(key=lambda r: r["index"])
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / self.filename
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS[kind])
            writer.writeheader()
            writer.writerows(rows)
        self.masks_written = sum(1 for r in rows if r.get("mask"))

    def _fields(self, kind: str, out: dict[str, Any], i: int) -> dict[str, Any]:
        """Row ``i`` of one batch's outputs, after ``index`` and ``source``."""
        selected = _indices(out["selected"][i]) if "selected" in out else ""
        if kind == "segmentation":
            return {"mask": out["mask_path"][i], "selected": selected}
        if kind == "selection":
            valid = "valid" not in out or bool(out["valid"][i])
            return {"selected": selected if valid else ""}
        pred = int(out["pred"][i])
        names = self.class_names
        return {
            "label": int(out["label"][i]) if "label" in out else "",
            "pred": pred,
            "pred_name": names[pred] if names and 0 <= pred < len(names) else "",
            "score": f"{float(out['score'][i]):.6f}",
            "selected": selected,
            "token_peaks": _indices(out["token_peaks"][i]) if "token_peaks" in out else "",
        }

    def written(self) -> str | None:
        """What this predict wrote, for the command's final line (rank 0): the CSV and, for
        segmentation, how many masks in which folder."""
        if self.path is None:
            return None
        if self.kind != "segmentation":
            return str(self.path)
        return f"{self.path} and {self.masks_written} masks in {self.folder / self.mask_dir}/"
