"""Dependencies point one way: the CLI/config layer above modules, modules above data and models,
callbacks reading module hooks instead of importing modules."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytorch_lightning as pl
from PIL import Image

from lw_lightning.callbacks.images import SelectionImages
from lw_lightning.callbacks.perf import FlopsPerSample

from .conftest import ROOT


def _imported_after(modules: list[str]) -> set[str]:
    """The lw_lightning modules loaded by importing ``modules`` in a fresh interpreter."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(' '.join(sorted(k for k in sys.modules if k.startswith('lw_lightning'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_callbacks_do_not_import_modules_and_data_does_not_import_the_cli_config():
    loaded = _imported_after(
        [
            "lw_lightning.callbacks.images",
            "lw_lightning.callbacks.perf",
            "lw_lightning.data.imagenet",
            "lw_lightning.data.ade20k",
            "lw_lightning.data.traffic_signs",
            "lw_lightning.data.synthetic_signs",
        ]
    )
    assert "lw_lightning.data.imagenet" in loaded and "lw_lightning.errors" in loaded
    assert not {m for m in loaded if m.startswith("lw_lightning.modules")}, loaded
    assert "lw_lightning.config" not in loaded and "lw_lightning.cli" not in loaded


class _Hooked(pl.LightningModule):
    def flops_per_sample(self) -> int:
        return 3_000_000_000

    def example_images(self, batch, ncols: int = 4) -> dict[str, Image.Image]:
        return {"images/custom": Image.new("RGB", (ncols, 2))}


def test_callbacks_read_the_module_hooks_and_skip_modules_without_them():
    assert list(SelectionImages(ncols=3).pictures(_Hooked(), {})) == ["images/custom"]
    assert SelectionImages(ncols=3).pictures(_Hooked(), {})["images/custom"].size == (3, 2)  # ncols reaches the hook
    assert SelectionImages().pictures(pl.LightningModule(), {}) == {}

    logged: list[dict] = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append({**metrics, "step": step}))
    trainer = SimpleNamespace(is_global_zero=True, fast_dev_run=False, loggers=[logger])
    FlopsPerSample().on_fit_start(trainer, _Hooked())  # type: ignore[arg-type]
    assert logged == [{"perf/gflops_per_sample": 3.0, "step": 0}]
    plain = FlopsPerSample()
    plain.on_fit_start(trainer, pl.LightningModule())  # type: ignore[arg-type]
    assert plain.flops is None and len(logged) == 1
