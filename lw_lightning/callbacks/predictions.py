"""Write per-sample predictions of the ``predict`` command to one CSV in the run directory."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter


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


class PredictionWriter(BasePredictionWriter):
    """CSV columns: ``index, source, label, pred, pred_name, score, selected, token_peaks``.

    ``source`` names the sample: its image or video file relative to the data root, or
    ``<split>/<index>`` for synthetic data. ``selected``: patch indices, space-separated, highest
    selector score first; empty for models without a selector. ``token_peaks``: for each learned
    token of a TokenLearner-ViT, the patch index (same row-major numbering) its attention map
    weighs most; empty for other models. ``pred`` is -1 (score 0) for a file that could not be
    decoded.

    Under DDP every rank's predictions are gathered and rank 0 writes one file sorted by index.
    """

    def __init__(
        self, output_dir: str | None = None, class_names: list[str] | None = None, filename: str = "predictions.csv"
    ) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.class_names = class_names
        self.filename = filename
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        rows = []
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        dataset = predict_dataset(trainer)
        for out in batches:
            n = out["index"].shape[0]
            for i in range(n):
                index = int(out["index"][i])
                row = {
                    "index": index,
                    "source": sample_source(dataset, index),
                    "label": int(out["label"][i]) if "label" in out else "",
                    "pred": int(out["pred"][i]),
                    "score": f"{float(out['score'][i]):.6f}",
                    "selected": " ".join(str(int(j)) for j in out["selected"][i].tolist()) if "selected" in out else "",
                    "token_peaks": " ".join(str(int(j)) for j in out["token_peaks"][i].tolist()) if "token_peaks" in out else "",
                }
                names = self.class_names
                row["pred_name"] = names[row["pred"]] if names and 0 <= row["pred"] < len(names) else ""
                rows.append(row)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        folder = Path(self.output_dir or trainer.log_dir or ".")
        if not trainer.is_global_zero:
            return
        rows.sort(key=lambda r: r["index"])
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / self.filename
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(
                f, fieldnames=["index", "source", "label", "pred", "pred_name", "score", "selected", "token_peaks"]
            )
            writer.writeheader()
            writer.writerows(rows)
