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


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory) -> Path:
    """A tiny synthetic Kinetics tree in the CVDF layout (lossless videos: decoders read them exactly)."""
    from lw_lightning.data.synthetic_kinetics import SyntheticKineticsSpec, make_synthetic_kinetics

    root = tmp_path_factory.mktemp("k") / "kinetics"
    spec = SyntheticKineticsSpec(train_per_class=2, val_per_class=1, test_per_class=1, num_frames=12, lossless=True)
    make_synthetic_kinetics(root, spec)
    return root


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


def skip_weight_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build ViT-B-sized models without their random init (seconds on this CPU): for tests
    where a strict load overwrites every weight anyway. A weight the load missed keeps
    uninitialised memory, so a comparison of outputs still fails."""
    from timm.models.vision_transformer import VisionTransformer

    monkeypatch.setattr(VisionTransformer, "init_weights", lambda self, *a, **k: None)
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    monkeypatch.setattr(torch.nn.modules.conv._ConvNd, "reset_parameters", lambda self: None)


@pytest.fixture
def no_weight_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`skip_weight_init` for one test."""
    skip_weight_init(monkeypatch)


def timm_layout(name: str, **kwargs) -> dict[str, torch.Size]:
    """Key names and shapes of the timm model ``name`` (built on the meta device: no memory)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    return {k: v.shape for k, v in model.state_dict().items()}


def random_weights(shapes: dict[str, torch.Size], seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes``; LayerScale gammas and norm weights around 1, so every block
    changes its input (timm's 1e-5 LayerScale init would make the blocks near identities)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=gen) * scale
        if key.endswith(".gamma") or (key.endswith(".weight") and len(shape) == 1):
            value = value + 1.0
        out[key] = value
    return out
