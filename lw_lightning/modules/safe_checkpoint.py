"""The base of this project's LightningModules: checkpoints that hold only weights and plain values,
and that are read with ``torch.load(weights_only=True)`` only.

A ``.ckpt`` is a pickle, and unpickling can run any code the file names. Lightning's
``load_from_checkpoint`` leaves ``weights_only`` to the caller; here it is always True, a file that
would build any other object is refused with one line naming that object, and the config dataclasses
that earlier versions saved load as dicts (:func:`~lw_lightning.models.checkpoint.legacy_configs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl

from ..models.checkpoint import legacy_configs, refused_object, unsafe_file_error


def plain_values(value: Any) -> Any:
    """``value`` with every dataclass and mapping turned into a dict (lists, tuples, tensors and
    scalars as they are): what ``torch.load(weights_only=True)`` reads back unaided."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_values(v) for v in value)
    return value


class SafeCheckpointModule(pl.LightningModule):
    """A LightningModule whose checkpoints load without running code from the file."""

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint`` with ``weights_only=True`` (the only value taken).

        Raises:
            ConfigError: the file holds objects other than weights and plain values (named)."""
        if weights_only is not True:
            raise ValueError("checkpoints of this project are read with weights_only=True only")
        try:
            with legacy_configs():
                return super().load_from_checkpoint(
                    checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs
                )
        except Exception as err:
            refused = refused_object(err)
            if refused is None:
                raise
            raise unsafe_file_error("checkpoint", checkpoint_path, refused) from None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a module built from Python with a config dataclass saves its fields, not the class
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = plain_values(checkpoint["hyper_parameters"])
