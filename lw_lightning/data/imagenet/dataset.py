"""The ImageNet dataset: (path, label) samples decoded as RGB, unreadable files handled by
:class:`~lw_lightning.data.images.SkippingDataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..images import SkippingDataset, load_rgb


class ImageNetDataset(SkippingDataset):
    """(path, label) samples decoded with PIL ``convert('RGB')`` and a PIL-input transform."""

    def __init__(
        self, samples: list[tuple[Path, int]], transform: Any, train: bool, seed: int = 0, max_retries: int = 10,
        root: str | Path | None = None, missing: int = 0,
    ) -> None:
        super().__init__(train, seed, max_retries, root, missing)
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        return self.samples[index][0]

    def _sample(self, index: int, image: Image.Image) -> dict[str, Any]:
        return {"image": self.transform(image), "label": torch.tensor(self.samples[index][1]), "index": torch.tensor(index)}

    def load(self, index: int) -> dict[str, Any]:
        return self._sample(index, load_rgb(self.image_path(index)))

    def placeholder(self, index: int, size: tuple[int, int]) -> dict[str, Any]:
        return self._sample(index, Image.new("RGB", size))
