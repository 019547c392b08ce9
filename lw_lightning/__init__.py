"""lw-lightning: adaptive-computation vision transformers (LookWhere, TokenLearner/ViViT) on PyTorch Lightning.

``lw_lightning.create_model(name, pretrained=None, **overrides)`` and ``lw_lightning.list_models(pattern)``
(:mod:`lw_lightning.models.registry`) are imported on first use: ``import lw_lightning`` itself stays
free of torch, so the command line answers a config mistake before torch loads. Using either (or
importing :mod:`lw_lightning.models.registry`) also registers the names in timm's registry.
"""

from typing import Any

__version__ = "0.1.0"

_REGISTRY_NAMES = ("create_model", "list_models", "model_spec")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from .models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'lw_lightning' has no attribute {name!r}")
