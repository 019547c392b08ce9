"""Shared fixtures: tiny configs pointed at tmp_path, and the repo root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def root() -> Path:
    return ROOT


def tiny_overrides(tmp_path: Path, arch: str = "vit", size: int = 112) -> list[str]:
    """Overrides that make conf/experiment/demo_vit.yaml run in seconds on CPU."""
    return [
        f"output_dir={tmp_path / 'runs'}",
        f"data.image_size={size}",
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=8",
        "data.batch_size=8",
        f"module.model.arch={arch}",
        f"module.model.img_size=[{size},{size}]",
        "module.model.selector_img_size=56",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.accelerator=cpu",
    ]
